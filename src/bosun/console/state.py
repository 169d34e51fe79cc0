"""What the console shows, read from the running gateway and the home: plain rows for the templates.

Nothing here renders or decides; each function answers one page's question from the same sources the
CLI reads (lock, attestations, settings, agents, audit, asks), so the console and `bosun` never disagree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from bosun.audit.log import AuditLog
from bosun.catalog.signing import TrustError, verify_image
from bosun.catalog.vulns.scan import check_image
from bosun.gateway.agents import Agents
from bosun.gateway.core import Gateway
from bosun.images.lock import Lock


@dataclass
class Container:
    id: str
    uptime: str
    restarts: int
    memory: str = ""


@dataclass
class ServerRow:
    name: str
    title: str
    source: str
    enabled: bool
    image: str = ""  # short image id; empty when not built
    signature: str = "not built"
    signed: bool = False
    sbom: bool = False
    audit_score: int | None = None
    vulns: dict[str, int] = field(default_factory=dict)  # blocking / waived / below
    containers: list[Container] = field(default_factory=list)


def _since(started_at: str) -> str:
    try:
        started = datetime.fromisoformat(started_at.replace("Z", "+00:00")[:26] + "+00:00")
    except ValueError:
        return "?"
    seconds = int((datetime.now(UTC) - started).total_seconds())
    hours, rest = divmod(max(seconds, 0), 3600)
    return f"{hours}h {rest // 60}m" if hours else f"{rest // 60}m {rest % 60}s"


def running(gw: Gateway) -> dict[str, list[Container]]:
    """Each server's live containers. Read on the event loop, which is where the gateway changes them."""
    found: dict[str, list[Container]] = {}
    for (server, _client), upstream in gw.upstreams().items():
        info = upstream.container
        if info is not None:
            found.setdefault(server, []).append(Container(info.id[:12], _since(info.started_at),
                                                          upstream.restarts))  # fmt: skip
    return found


def servers(gw: Gateway, running: dict[str, list[Container]]) -> list[ServerRow]:
    """Every catalog entry with its image's trust and scan status (file and crypto work: run it off the loop)."""
    lock = Lock.load(gw.home.lock_file)
    rows = []
    for entry in gw.catalog:
        row = ServerRow(entry.name, entry.title, entry.source.describe(), gw.is_enabled(entry.name),
                        containers=running.get(entry.name, []))  # fmt: skip
        locked = lock.images.get(entry.name)
        if locked is not None:
            row.image, row.audit_score = locked.image_id[7:19], locked.audit_score
            try:
                verify_image(gw.home.root, entry.name, locked.image_id)
                row.signature, row.signed, row.sbom = "verified", True, True
            except TrustError as e:
                row.signature = str(e).split(";")[0][:160]
            verdict = check_image(gw.home, entry.name, locked.image_id, gw.settings.vulnerabilities.block_at,
                                  date.today())  # fmt: skip
            if verdict is not None:
                row.vulns = {"blocking": len(verdict.blocking), "waived": len(verdict.waived),
                             "below": len(verdict.below)}  # fmt: skip
        rows.append(row)
    return rows


@dataclass
class AgentRow:
    name: str
    groups: list[str]
    created: str
    revoked: str
    last_seen: str
    sessions: int


def agents(gw: Gateway, audit: AuditLog) -> list[AgentRow]:
    seen = audit.last_seen()
    live = Counter(gw.agent_of(client) for client, _flow in gw.flows.items())
    rows = []
    for a in Agents.load(gw.home.agents_file).agents:
        revoked = a.revoked.strftime("%Y-%m-%d %H:%M") if a.revoked else ""
        created = a.created.strftime("%Y-%m-%d %H:%M")
        rows.append(AgentRow(a.name, a.groups, created, revoked, seen.get(a.name, "")[:19], live[a.name]))
    return rows


@dataclass
class SessionRow:
    id: str
    agent: str
    calls: int
    private: str  # the call that brought private data in, or ""
    untrusted: str
    send: str

    @property
    def legs(self) -> int:
        return sum(bool(x) for x in (self.private, self.untrusted, self.send))


def sessions(gw: Gateway) -> list[SessionRow]:
    """Each session flow control remembers, and which legs of the trifecta it has touched (by which call)."""
    rows = []
    for client, flow in gw.flows.items():
        legs = [str(o) if o else "" for o in (flow.first_private, flow.first_untrusted, flow.first_send)]
        rows.append(SessionRow(client, gw.agent_of(client), flow.calls, *legs))
    return rows


@dataclass
class Minute:
    label: str
    allowed: int
    denied: int


@dataclass
class Latency:
    server: str
    calls: int
    p50: float
    p95: float
    p99: float


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def overview(audit: AuditLog, minutes: int = 30, sample: int = 5000) -> tuple[list[Minute], list[Latency]]:
    """Tool calls and refusals per minute over the last ``minutes``, and latency percentiles per server over
    the last ``sample`` calls."""
    calls = audit.find({"kind": "tools/call"}, limit=sample)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    buckets = {now.timestamp() - 60 * i: Minute("", 0, 0) for i in range(minutes)}
    by_server: dict[str, list[float]] = {}
    for r in calls:
        try:
            at = datetime.fromisoformat(r.ts).replace(second=0, microsecond=0).timestamp()
        except ValueError:
            continue
        if (minute := buckets.get(at)) is not None:
            if r.decision == "deny" or r.outcome == "refused":
                minute.denied += 1
            else:
                minute.allowed += 1
        if r.outcome == "ok":
            by_server.setdefault(r.server, []).append(r.duration_ms)
    for at, minute in buckets.items():
        minute.label = datetime.fromtimestamp(at, UTC).strftime("%H:%M")
    series = [buckets[k] for k in sorted(buckets)]
    latencies = [
        Latency(server, len(ms), _percentile(s := sorted(ms), 0.5), _percentile(s, 0.95), _percentile(s, 0.99))
        for server, ms in sorted(by_server.items())
    ]
    return series, latencies
