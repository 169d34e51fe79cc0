"""Prometheus metrics of one gateway: requests and tool calls by outcome, call latency, refusals by the
rule that made them, screening findings, redactions, and the server containers running and restarted.

Fed from the one place every request is audited (``Gateway._audited``), so a metric can never count
what the audit did not record. Container figures are read from the gateway when scraped, not kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# From a warm call's fraction of a millisecond to a slow tool's minute.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Containers(Collector):
    def __init__(self, upstreams: Callable[[], Iterable[Any]]) -> None:
        self._upstreams = upstreams

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily("bosun_containers_running", "Server containers running", labels=["server"])
        restarts = CounterMetricFamily(
            "bosun_container_restarts", "Server containers restarted after they died", labels=["server"]
        )
        counts: dict[str, list[int]] = {}
        for up in self._upstreams():
            count = counts.setdefault(up.name, [0, 0])
            count[0] += up.container is not None
            count[1] += up.restarts
        for server, (live, restarted) in sorted(counts.items()):
            running.add_metric([server], live)
            restarts.add_metric([server], restarted)
        yield running
        yield restarts


class Metrics:
    def __init__(self, upstreams: Callable[[], Iterable[Any]]) -> None:
        """``upstreams`` lists the gateway's upstreams (each with ``name``, ``container``, ``restarts``)."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("bosun_requests", "MCP requests handled", ["method", "outcome"], registry=r)
        labels = ["server", "tool", "decision", "outcome"]
        self.calls = Counter("bosun_tool_calls", "Tool calls by decision and outcome", labels, registry=r)
        self.latency = Histogram(
            "bosun_tool_call_duration_seconds", "Tool call latency through the gateway", ["server"],
            buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.denials = Counter("bosun_denials", "Refused requests, by the rule or reason that refused them", ["rule"],
                               registry=r)  # fmt: skip
        self.findings = Counter(
            "bosun_screening_findings", "Prompt-injection findings in results", ["rule", "action"], registry=r
        )
        self.redactions = Counter("bosun_redactions", "Secrets redacted, by name or format", ["name"], registry=r)
        r.register(_Containers(upstreams))
        self._children: dict[tuple[Any, ...], Any] = {}

    def observe(
        self, kind: str, server: str, tool: str, decision: str, outcome: str, seconds: float, detail: dict[str, Any]
    ) -> None:
        """Count one audited request."""
        self._child(self.requests, kind, outcome).inc()
        if decision == "deny":
            for rule in detail.get("rules") or ["withheld" if kind == "tools/call" else "default"]:
                self.denials.labels(rule).inc()
        if kind != "tools/call":
            return
        self._child(self.calls, server, tool, decision, outcome).inc()
        self._child(self.latency, server).observe(seconds)
        screening = detail.get("screening")
        if screening:
            for finding in screening["findings"]:
                self.findings.labels(finding["rule"], screening["action"]).inc()
        for name in [*detail.get("redacted", []), *detail.get("redacted_args", [])]:
            self.redactions.labels(name).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: the client library checks and joins the labels on every
        lookup, a tenth of the audit's cost per call (measured), and these repeat on every call."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
