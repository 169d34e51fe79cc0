"""Prometheus metrics of one gateway: requests and tool calls by outcome, call latency, refusals by the
rule that made them, screening findings, redactions, and the server containers running and restarted.

Fed from the one place every request is audited (``Gateway.audited``), so a metric can never count
what the audit did not record. Container figures are read from the gateway when scraped, not kept.

The request figures are tallied as plain numbers and handed to the client library only when scraped.
Its own counters and histogram take a lock and check their labels on every increment: counting one
call through them was 3.7 us (four increments and a bucket search), on a path where the whole gateway
spends about 300 us a call. Only the event loop's thread counts and scrapes, so nothing is locked here.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# From a warm call's fraction of a millisecond to a slow tool's minute.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BOUNDS = [*(str(float(b)) for b in _BUCKETS), "+Inf"]


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


class _Counts:
    """One counter's tallies by label values, each with when it was first counted (the ``_created`` series)."""

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.tallies: dict[tuple[str, ...], list[float]] = {}

    def add(self, *labels: str) -> None:
        tally = self.tallies.get(labels)
        if tally is None:
            self.tallies[labels] = [1.0, time.time()]
        else:
            tally[0] += 1

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, (value, created) in self.tallies.items():
            family.add_metric(labels, value, created=created)
        return family


class _Latency:
    """Tool call latency by server: a count per bucket (not yet cumulative) and the sum."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, server: str, seconds: float) -> None:
        counts = self.counts.get(server) or self.counts.setdefault(server, [0] * (len(_BUCKETS) + 1))
        counts[bisect.bisect_left(_BUCKETS, seconds)] += 1  # the first bound at or above: Prometheus' "le"
        self.sums[server] = self.sums.get(server, 0.0) + seconds

    def family(self) -> Metric:
        family = HistogramMetricFamily(
            "bosun_tool_call_duration_seconds", "Tool call latency through the gateway", labels=["server"]
        )
        for server, counts in self.counts.items():
            cumulative = itertools.accumulate(counts)
            family.add_metric([server], [(b, float(n)) for b, n in zip(_BOUNDS, cumulative, strict=True)],
                              self.sums[server])  # fmt: skip
        return family


class Metrics(Collector):
    def __init__(self, upstreams: Callable[[], Iterable[Any]]) -> None:
        """``upstreams`` lists the gateway's upstreams (each with ``name``, ``container``, ``restarts``)."""
        self.requests = _Counts("bosun_requests", "MCP requests handled", ["method", "outcome"])
        self.calls = _Counts("bosun_tool_calls", "Tool calls by decision and outcome",
                             ["server", "tool", "decision", "outcome"])  # fmt: skip
        self.latency = _Latency()
        self.denials = _Counts("bosun_denials", "Refused requests, by the rule or reason that refused them", ["rule"])
        self.findings = _Counts("bosun_screening_findings", "Prompt-injection findings in results", ["rule", "action"])
        self.redactions = _Counts("bosun_redactions", "Secrets redacted, by name or format", ["name"])
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.registry.register(_Containers(upstreams))

    def observe(
        self, kind: str, server: str, tool: str, decision: str, outcome: str, seconds: float, detail: dict[str, Any]
    ) -> None:
        """Count one audited request."""
        self.requests.add(kind, outcome)
        if decision == "deny":
            for rule in detail.get("rules") or ["withheld" if kind == "tools/call" else "default"]:
                self.denials.add(rule)
        if kind != "tools/call":
            return
        self.calls.add(server, tool, decision, outcome)
        self.latency.observe(server, seconds)
        screening = detail.get("screening")
        if screening:
            for finding in screening["findings"]:
                self.findings.add(finding["rule"], screening["action"])
        for key in ("redacted", "redacted_args"):
            for name in detail.get(key, ()):
                self.redactions.add(name)

    def collect(self) -> Iterator[Metric]:
        for counts in (self.requests, self.calls, self.denials, self.findings, self.redactions):
            yield counts.family()
        yield self.latency.family()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
