"""The one interface every container backend implements; the gateway never talks to an engine directly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# Container labels are a contract: `bosun ps`, orphan reaping and other tools select on them.
LABEL_SERVER = "io.bosun.server"
LABEL_SESSION = "io.bosun.session"
LABEL_GATEWAY = "io.bosun.gateway"
LABEL_MANAGED = "io.bosun.managed"
LABEL_ROLE = "io.bosun.role"
LABEL_EGRESS_PROXY = "io.bosun.egress-proxy"
LABEL_EGRESS_NETWORK = "io.bosun.egress-network"


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class SecretFile:
    """A secret delivered to one container: as a file, and as ``env`` too when that is set.

    The value is kept out of ``repr`` so it cannot reach a log line or a traceback by accident.
    """

    name: str
    env: str | None
    value: str = field(repr=False)


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    cpus: float
    pids: int


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to start one server container. Hardening is not optional, so not here."""

    name: str
    image: str
    server: str
    command: list[str]
    args: list[str]
    limits: Limits
    user: str
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    secrets: list[SecretFile] = field(default_factory=list)
    egress: list[str] = field(default_factory=list)  # allowlist; empty means no network at all
    # A private directory of this host where the server's stdin and stdout may be made FIFOs, which a
    # backend whose engine shares this host's files connects directly; None keeps the engine's stream.
    stdio_dir: Path | None = None


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    server: str
    image: str
    status: str
    labels: dict[str, str]
    started_at: str


class StdioChannel(Protocol):
    """A container's stdin and stdout as byte streams."""

    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes:
        """The next stdout bytes; raises ``anyio.EndOfStream`` when the container's stdout closes."""
        ...

    async def aclose(self) -> None: ...


StderrSink = Callable[[bytes], Awaitable[None] | None]
EgressSink = Callable[[dict[str, object]], None]


class Backend(Protocol):
    """Start, stop, list and inspect server containers.

    There is deliberately no ``logs``: a server's stdout is its MCP stream, so the engine is told
    to keep no log at all, and its stderr arrives through ``start``'s sink.
    """

    async def start(
        self, spec: ContainerSpec, on_stderr: StderrSink, on_egress: EgressSink | None = None
    ) -> tuple[ContainerInfo, StdioChannel]:
        """Create, attach to and start a container; stdout arrives on the channel, stderr at ``on_stderr``.

        With ``spec.egress``, the container's only way out is an egress proxy enforcing that
        allowlist; its decisions arrive at ``on_egress``.
        """
        ...

    async def stop(self, container_id: str, timeout_s: float = 5) -> None:
        """Stop and remove the container; a container already gone is not an error."""
        ...

    async def list(self, labels: dict[str, str] | None = None) -> list[ContainerInfo]: ...

    async def prune_networks(self) -> None:
        """Remove networks this backend made that nothing uses any more."""
        ...

    async def inspect(self, container_id: str) -> dict[str, object]: ...

    async def memory_bytes(self, container_id: str) -> int | None:
        """What the container uses now (the engine's one-shot stats), or None when it cannot tell."""
        ...
