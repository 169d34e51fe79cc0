"""The gateway's metrics, tallied as plain numbers, expose what the client library's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from bosun.telemetry.metrics import _BUCKETS, Metrics

# At a bound (Prometheus' buckets are "less or equal"), between bounds, below the first, above the last.
SECONDS = [0.0005, 0.0007, 0.0001, 0.004, 60, 61.5, 0.0007]


def _samples(text: bytes, prefix: str) -> list[str]:
    return sorted(line for line in text.decode().splitlines() if line.startswith(prefix) and "_created" not in line)


def test_latency_buckets_match_the_client_librarys_histogram() -> None:
    ours = Metrics(lambda: [])
    registry = CollectorRegistry()
    theirs = Histogram("bosun_tool_call_duration_seconds", "latency", ["server"], buckets=_BUCKETS, registry=registry)
    for i, seconds in enumerate(SECONDS):
        server = "time" if i % 2 else "fetch"
        ours.observe("tools/call", server, "get", "allow", "ok", seconds, {})
        theirs.labels(server).observe(seconds)

    prefix = "bosun_tool_call_duration_seconds"
    assert _samples(ours.exposition(), prefix) == _samples(generate_latest(registry), prefix)
    assert 'bosun_tool_call_duration_seconds_bucket{le="0.0005",server="fetch"} 2.0' in ours.exposition().decode()


def test_counters_by_label_as_the_client_library_counts_them() -> None:
    ours = Metrics(lambda: [])
    registry = CollectorRegistry()
    requests = Counter("bosun_requests", "requests", ["method", "outcome"], registry=registry)
    calls = Counter("bosun_tool_calls", "calls", ["server", "tool", "decision", "outcome"], registry=registry)
    denials = Counter("bosun_denials", "denials", ["rule"], registry=registry)
    findings = Counter("bosun_screening_findings", "findings", ["rule", "action"], registry=registry)
    redactions = Counter("bosun_redactions", "redactions", ["name"], registry=registry)
    screened = {"screening": {"action": "annotate", "findings": [{"rule": "ignore-previous"}]}, "redacted": ["aws"]}
    seen = [
        ("initialize", "", "", "allow", "ok", {}),
        ("tools/call", "time", "get", "allow", "ok", screened),
        ("tools/call", "time", "get", "allow", "ok", {"redacted_args": ["aws", "github"]}),
        ("tools/call", "time", "convert", "deny", "refused", {"rules": ["no-convert"]}),
        ("tools/call", "time", "hidden", "deny", "refused", {}),  # withheld: no rule named
        ("resources/read", "", "", "deny", "refused", {}),
    ]
    for kind, server, tool, decision, outcome, detail in seen:
        ours.observe(kind, server, tool, decision, outcome, 0.001, detail)
        requests.labels(kind, outcome).inc()
        if decision == "deny":
            for rule in detail.get("rules") or ["withheld" if kind == "tools/call" else "default"]:
                denials.labels(rule).inc()
        if kind == "tools/call":
            calls.labels(server, tool, decision, outcome).inc()
            for finding in detail.get("screening", {}).get("findings", []):
                findings.labels(finding["rule"], "annotate").inc()
            for name in [*detail.get("redacted", []), *detail.get("redacted_args", [])]:
                redactions.labels(name).inc()

    text, expected = ours.exposition(), generate_latest(registry)
    for name in ("bosun_requests", "bosun_tool_calls", "bosun_denials", "bosun_screening_findings", "bosun_redactions"):
        assert _samples(text, name) == _samples(expected, name), name
    assert 'bosun_redactions_total{name="aws"} 2.0' in text.decode()
    assert 'bosun_denials_total{rule="withheld"} 1.0' in text.decode()
    assert "bosun_requests_created" in text.decode()  # each series still says since when it counts
