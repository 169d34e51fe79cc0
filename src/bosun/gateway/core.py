"""The gateway's core: which servers are enabled, their upstreams, and routing by namespaced name.

Transports (stdio, streamable HTTP) sit above this and know nothing of containers; the runtime
backend sits below and knows nothing of MCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import secrets
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import mcp.types as types
from anyio.abc import TaskGroup
from mcp.shared.dispatcher import ProgressFnT as ProgressFn
from mcp.shared.exceptions import MCPError
from mcp.shared.uri_template import UriTemplate

from bosun.audit.commit import Committer
from bosun.audit.journal import Journal, recover
from bosun.audit.log import Anchor, AuditLog, Record, shape
from bosun.catalog import sources
from bosun.catalog.loader import Catalog
from bosun.catalog.models import Entry, ImageSource, RemoteSource
from bosun.catalog.pins import Pins, PinStore, digest, tool_hash
from bosun.catalog.poisoning import WEAK_RULES, scan
from bosun.catalog.signing import TrustError, UnsignedError, verify_image
from bosun.catalog.vulns.scan import check_image
from bosun.config import MountGrant, Settings
from bosun.gateway import names
from bosun.gateway.agents import Directory
from bosun.gateway.downstream import ELICITATION, Downstream, InputBridge, request_input
from bosun.gateway.oauth import gateway_auth
from bosun.gateway.oidc import OidcVerifier
from bosun.gateway.remote import remote_connector
from bosun.gateway.upstream import Connector, Upstream, UpstreamError, container_connector
from bosun.home import Home
from bosun.images.base import SERVER_UID
from bosun.images.lock import Lock
from bosun.policy import asks
from bosun.policy import rules as policy_rules
from bosun.policy.asks import Asks
from bosun.policy.engine import Decision, Engine
from bosun.policy.flow import Origin, SessionFlow, Sessions
from bosun.policy.rules import Policy, PolicyError
from bosun.policy.screen import Finding
from bosun.policy.texts import text_of
from bosun.runtime.backend import (
    LABEL_GATEWAY,
    LABEL_SESSION,
    Backend,
    ContainerInfo,
    ContainerSpec,
    Limits,
    Mount,
    SecretFile,
)
from bosun.secrets.redact import Redactor
from bosun.secrets.store import SecretError, SecretStore
from bosun.telemetry import traces
from bosun.telemetry.metrics import Metrics

log = logging.getLogger("bosun.gateway")
server_log = logging.getLogger("bosun.server")

SHARED = "shared"
AUDIT_HEAD_EVERY_S = 60
KEPT_CHARS = 4096  # of arguments or a result the policy asks the audit to keep
R = TypeVar("R")


def _note_redacted(note: dict[str, Any], key: str, names_found: set[str], server: str) -> None:
    """Record which secrets were redacted, by name or format; never their values."""
    if names_found:
        note.setdefault("detail", {})[key] = sorted(names_found)
        where = "the arguments" if key == "redacted_args" else "a result"
        log.warning("redacted secret(s) %s from %s", sorted(names_found), where, extra={"server": server})


def _note_screening(note: dict[str, Any], policy: Engine, findings: list[Finding]) -> None:
    if findings:
        note.setdefault("detail", {})["screening"] = {
            "action": policy.screener.screening.injection, "findings": [f.as_dict() for f in findings[:10]]
        }  # fmt: skip


def _gateway_id() -> str:
    # host:pid lets the next gateway on this host tell a dead owner's containers from a live one's.
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_alive(gateway_label: str) -> bool:
    host, _, rest = gateway_label.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # not ours to judge
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Route:
    server: str
    name: str  # the name the server itself uses


@dataclass(frozen=True)
class Surface:
    """What a server offers, and which of its tools are withheld (name -> why)."""

    tools: list[types.Tool]
    prompts: list[types.Prompt]
    resources: list[types.Resource]
    withheld: dict[str, str]

    def digests(self) -> dict[str, str]:
        return {"tools": digest(self.tools), "prompts": digest(self.prompts), "resources": digest(self.resources)}


class Audited:
    """``Gateway.audited``'s context. A class rather than ``contextlib.asynccontextmanager``, whose generator
    and its context manager cost about 2 us on every request, all of them audited."""

    __slots__ = ("_client", "_gateway", "_kind", "_note", "_started")

    def __init__(self, gateway: Gateway, kind: str, client: str, note: dict[str, Any]) -> None:
        self._gateway, self._kind, self._client, self._note = gateway, kind, client, note
        self._started = 0.0

    async def __aenter__(self) -> dict[str, Any]:
        self._started = time.perf_counter()
        return self._note

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        outcome, reason = "ok", ""
        if isinstance(error, Exception):
            outcome, reason = ("refused" if isinstance(error, MCPError) else "error"), str(error)[:500]
        await self._gateway._keep(self._kind, self._client, self._note, self._started, outcome, reason)


class Gateway:
    def __init__(self, home: Home, backend: Backend, *, idle_timeout_s: float = 300, only: str | None = None) -> None:
        """``only`` serves that one enabled server and no other (``bosun gateway run --server``)."""
        self.home = home
        self.only = only
        self.backend = backend
        self.id = _gateway_id()
        self.idle_timeout_s = idle_timeout_s
        self.catalog: Catalog = sources.load(home.root)
        self.settings = Settings.load(home.config_file)
        self._upstreams: dict[tuple[str, str], Upstream] = {}
        self._tool_routes: dict[str, Route] = {}
        self._prompt_routes: dict[str, Route] = {}
        self._resource_routes: dict[str, str] = {}
        self._template_routes: dict[str, str] = {}
        self._bridges: dict[str, InputBridge] = {}
        # uri -> client -> how to tell that client the resource changed (its connection's notifier)
        self._subscribers: dict[str, dict[str, Callable[[str], Awaitable[None]]]] = {}
        self._seq = itertools.count(1)
        self._tg: TaskGroup | None = None
        self.pins = PinStore(home.root)
        self._withheld: dict[str, str] = {}  # public tool name -> why
        self._images: dict[str, str] = {}  # server -> the image id its containers were last started from
        self._agents: dict[str, str] = {}  # client key -> the agent it authenticated as
        self.directory = Directory(home.agents_file, OidcVerifier(self.settings.oidc) if self.settings.oidc else None)
        self.asks = Asks(home.asks_dir)
        # An invalid policy stops the gateway from starting: running without the intended rules would fail open.
        self.policy = Engine(policy_rules.load(home.policy_file))
        self.flows = Sessions()  # outlives policy reloads: what a session has seen stays seen
        self._policy_mtime = self._mtime(home.policy_file)
        self.audit = AuditLog(home.audit_db)
        self.journal = Journal(self.audit)
        self.committer = Committer(self.journal)
        self._published_head: Anchor | None = None
        self._reported: set[tuple[str, str]] = set()
        self.secrets = SecretStore(home.root)
        self.redactor = self._load_redactor()
        self._config_mtime = self._mtime()
        self._secrets_mtime = self._mtime(self.secrets.path)
        self.listeners: list[Callable[[], Awaitable[None]]] = []
        # client -> the least severe server log message it asked for (logging/setLevel); applied when relaying,
        # as one shared server serves clients that asked for different levels
        self.log_levels: dict[str, types.LoggingLevel] = {}
        self.metrics = Metrics(lambda: self._upstreams.values())

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Gateway:
        await self.reap_orphans()
        recover(self.audit)  # records a gateway that died had kept but not chained
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._watch_config)
        self._tg.start_soon(self.journal.run)
        self._tg.start_soon(self._publish_audit_head)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tg is not None
        with anyio.CancelScope(shield=True):
            await self.stop_all()
            # Anything a crashed start left behind is ours too: leave no container after exit.
            for c in await self.backend.list({LABEL_GATEWAY: self.id}):
                await self.backend.stop(c.id, timeout_s=0)
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(et, e, tb)
        self.committer.flush()
        await self.journal.aclose()
        self._log_audit_head()
        self.audit.close()

    def _log_audit_head(self) -> None:
        head = self.audit.head()
        if head is not None and head != self._published_head:
            self._published_head = head
            # A log shipped off this machine is an anchor: `bosun audit verify --anchor` catches truncation.
            log.info("audit head %s", head, extra={"audit_head": str(head)})

    async def _publish_audit_head(self) -> None:
        while True:
            await anyio.sleep(AUDIT_HEAD_EVERY_S)
            self._log_audit_head()

    async def stop_all(self) -> None:
        async with anyio.create_task_group() as tg:
            for up in self._upstreams.values():
                tg.start_soon(up.stop)

    async def start_server(self, server: str) -> None:
        """Start a shared server's container ahead of its first call (a session-scoped server starts per client,
        so there is nothing to start ahead). Raises UpstreamError when it cannot start."""
        if self.catalog.get(server).scope == "session":
            raise UpstreamError(f"{server} runs one container per client session; it starts with a client's first call")
        await self.upstream(server, SHARED).session()

    async def stop_server(self, server: str) -> int:
        """Stop ``server``'s containers now (a later call starts a fresh one); returns how many were running."""
        ups = [up for (name, _client), up in self._upstreams.items() if name == server and up.container is not None]
        async with anyio.create_task_group() as tg:
            for up in ups:
                tg.start_soon(up.stop)
        return len(ups)

    async def reap_orphans(self) -> list[ContainerInfo]:
        """Remove containers left by a gateway on this host that is no longer running."""
        reaped = []
        for c in await self.backend.list():
            owner = c.labels.get(LABEL_GATEWAY, "")
            if owner and not _owner_alive(owner):
                log.info("reaping orphan container", extra={"server": c.server, "container": c.id[:12]})
                await self.backend.stop(c.id, timeout_s=0)
                reaped.append(c)
        await self.backend.prune_networks()
        return reaped

    def _mtime(self, path: Path | None = None) -> float:
        try:
            return (path or self.home.config_file).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _load_redactor(self) -> Redactor:
        try:
            return Redactor(self.secrets.all())
        except SecretError as e:
            # Without the key nothing can be redacted; say so loudly rather than pretend.
            log.error("secret values cannot be read for redaction: %s", e)
            return Redactor({})

    async def _watch_config(self) -> None:
        """Pick up ``bosun server enable|disable`` made while running, and tell clients."""
        while True:
            await anyio.sleep(1)
            self._reload_policy()
            secrets_mtime = self._mtime(self.secrets.path)
            if secrets_mtime != self._secrets_mtime:
                self._secrets_mtime = secrets_mtime
                self.redactor = self._load_redactor()
            mtime = self._mtime()
            if mtime == self._config_mtime:
                continue
            self._config_mtime = mtime
            try:
                settings = Settings.load(self.home.config_file)
            except ValueError as e:
                log.error("ignoring invalid config: %s", e)
                continue
            before = set(self.settings.enabled())
            self.settings = settings
            for key in [k for k in self._upstreams if not self.is_enabled(k[0])]:
                await self._upstreams.pop(key).stop()
            if set(settings.enabled()) != before:
                await self.notify_list_changed()

    def _reload_policy(self) -> None:
        mtime = self._mtime(self.home.policy_file)
        if mtime == self._policy_mtime:
            return
        self._policy_mtime = mtime
        try:
            # A new engine starts with fresh rate windows; sessions and containers are untouched.
            self.policy = Engine(policy_rules.load(self.home.policy_file))
        except PolicyError as e:
            log.error("keeping the previous policy; the new one is invalid:\n%s", e)
            return
        log.info("policy reloaded: %d rules", len(self.policy.policy.rules))

    async def notify_list_changed(self) -> None:
        for listener in list(self.listeners):
            try:
                await listener()
            except Exception:
                self.listeners.remove(listener)

    # -- upstreams ---------------------------------------------------------------------------

    def is_enabled(self, server: str) -> bool:
        return self.settings.is_enabled(server) and (self.only is None or server == self.only)

    def enabled_entries(self) -> list[Entry]:
        out = []
        for name in self.settings.enabled():
            if self.only is not None and name != self.only:
                continue
            try:
                out.append(self.catalog.get(name))
            except KeyError:
                log.error("enabled server %r is not in the catalog; skipping", name)
        return out

    def _spec(self, entry: Entry, client: str, placeholder: Path | None = None) -> ContainerSpec:
        locked = Lock.load(self.home.lock_file).images.get(entry.name)
        if locked is None:
            raise UpstreamError(f"{entry.name} has no image yet: run `bosun catalog build {entry.name}`")
        origin = self.catalog.origin(entry.name)
        try:
            # Fail closed: the container runs by this verified image id, never by a mutable tag.
            verify_image(self.home.root, entry.name, locked.image_id)
        except UnsignedError as e:
            if isinstance(entry.source, ImageSource) and not origin.allow_unsigned:
                raise UpstreamError(
                    f"refusing to start {entry.name}: its image {locked.image_id[7:19]} was not built by Bosun and "
                    f"is not signed; review it, then vouch for it with `bosun image sign {entry.name}`"
                ) from None
            if not origin.allow_unsigned:
                raise UpstreamError(f"refusing to start {entry.name}: {e}") from None
            # Only an absent signature is tolerated: a bad or foreign one still means tampering.
            log.warning("starting unsigned image of %s: source %r allows unsigned images", entry.name, origin.source)
        except TrustError as e:
            raise UpstreamError(f"refusing to start {entry.name}: {e}") from None
        self._check_vulnerabilities(entry.name, locked.image_id)
        self._images[entry.name] = locked.image_id
        grants = self.settings.servers.get(entry.name)
        mounts = grants.mounts if grants else []
        granted = {m.target for m in mounts}
        for req in entry.mounts:
            if req.required and req.target not in granted and placeholder is not None:
                mounts = [*mounts, MountGrant(source=placeholder, target=req.target)]
            elif req.required and req.target not in granted:
                raise UpstreamError(
                    f"{entry.name} needs a folder at {req.target} ({req.description}): run "
                    f"`bosun server enable {entry.name} --mount HOST_PATH:{req.target}`"
                )
        secrets = []
        for ref in entry.secrets:
            try:
                secrets.append(SecretFile(ref.name, ref.env, self.secrets.get(ref.name)))
            except SecretError as e:
                if ref.required:
                    raise UpstreamError(f"{entry.name} cannot start: {e}") from None
        return ContainerSpec(
            name=f"bosun-{entry.name}-{self.id.rsplit(':', 1)[1]}-{next(self._seq)}",
            image=locked.image_id,
            server=entry.name,
            # Explicit, so an edited command takes effect without waiting for a rebuild.
            command=entry.command,
            args=entry.args,
            env=dict(entry.env),
            mounts=[Mount(m.source, m.target, m.read_only) for m in mounts],
            limits=Limits(entry.resources.memory_mb, entry.resources.cpus, entry.resources.pids),
            user=f"{SERVER_UID}:{SERVER_UID}",
            labels={LABEL_GATEWAY: self.id, LABEL_SESSION: client},
            secrets=secrets,
            egress=list(entry.network.allow_hosts),
            # Only an image Bosun built is sure to have the shell that wires the FIFOs.
            stdio_dir=self.home.stdio_dir
            if self.settings.stdio == "fifo" and not isinstance(entry.source, ImageSource)
            else None,
        )

    def _check_vulnerabilities(self, server: str, image_id: str) -> None:
        block_at = self.settings.vulnerabilities.block_at
        verdict = check_image(self.home, server, image_id, block_at, datetime.now(UTC).date())
        if verdict is None:
            return
        for f in verdict.waived:
            log.warning("starting %s despite %s: waived (see `bosun vuln waivers`)", server, f.describe())
        if verdict.blocking:
            listed = "; ".join(f.describe() for f in verdict.blocking[:5])
            more = f" and {len(verdict.blocking) - 5} more" if len(verdict.blocking) > 5 else ""
            raise UpstreamError(
                f"refusing to start {server}: {len(verdict.blocking)} vulnerabilit"
                f"{'y' if len(verdict.blocking) == 1 else 'ies'} at or above {block_at}: {listed}{more}. "
                f"Rebuild with fixed versions, or waive one with `bosun vuln waive ID --server {server} "
                "--reason ... --until YYYY-MM-DD` (see `bosun image scan " + server + "`)"
            )

    async def capture(self, server: str) -> Surface:
        """Start ``server`` once, as built, and read what it offers; its tools go through ``vet``, so a
        server seen for the first time is pinned here, and one whose tools drifted is reported.

        A folder the entry requires but nobody granted yet is an empty read-only placeholder."""
        assert self._tg is not None, "use the gateway as an async context manager"
        entry = self.catalog.get(server)
        with tempfile.TemporaryDirectory(prefix="bosun-capture-") as empty:
            up = Upstream(server, self._connector(entry, "capture", Path(empty)), self._tg)
            try:
                tools = await up.list_tools()
                with_prompts = await up.session_offering("prompts")
                prompts = (await with_prompts.list_prompts()).prompts if with_prompts else []
                with_resources = await up.session_offering("resources")
                resources = (await with_resources.list_resources()).resources if with_resources else []
            finally:
                await up.stop()
        offered = {name: names.namespaced(server, name) for name in (t.name for t in tools)}
        approved = {t.name for t in self.vet(server, tools)}
        withheld = {n: self._withheld.get(offered[n], "") for n in offered if n not in approved}
        return Surface(tools, prompts, resources, withheld)

    def upstream(self, server: str, client: str) -> Upstream:
        if not self.is_enabled(server):  # on every call: no list built, nothing sorted
            raise MCPError(types.INVALID_PARAMS, f"server {server!r} is not enabled on this gateway")
        entry = self.catalog.get(server)
        key = (server, client if entry.scope == "session" else SHARED)
        up = self._upstreams.get(key)
        if up is None:
            assert self._tg is not None, "use the gateway as an async context manager"
            up = Upstream(
                server,
                self._connector(entry, key[1]),
                self._tg,
                idle_timeout_s=self.idle_timeout_s,
                on_tools_changed=self._tools_changed,
                on_resource_updated=self._resource_updated,
            )
            self._upstreams[key] = up
        return up

    def _connector(self, entry: Entry, client: str, placeholder: Path | None = None) -> Connector:
        if isinstance(entry.source, RemoteSource):
            source = entry.source

            def headers() -> dict[str, str]:
                # At each connect, as a container's secrets are read at each start: a rotated secret applies.
                try:
                    return source.resolved_headers(self.secrets.get)
                except SecretError as e:
                    raise UpstreamError(f"{entry.name} cannot connect: {e}") from None

            oauth = gateway_auth(self.secrets, entry.name, source) if source.auth == "oauth" else None
            return remote_connector(source, headers, oauth)

        async def stderr(data: bytes) -> None:
            for line in data.decode(errors="replace").splitlines():
                if line.strip():
                    server_log.info(self.redactor.text(line)[0], extra={"server": entry.name})

        return container_connector(self.backend, lambda: self._spec(entry, client, placeholder), entry.name, stderr)

    def _tools_changed(self, server: str) -> None:
        """Forget the server's routes, so each tool is vetted against its pin again before use."""
        for public in [p for p, r in self._tool_routes.items() if r.server == server]:
            del self._tool_routes[public]
        if self._tg is not None:
            self._tg.start_soon(self.notify_list_changed)

    def upstreams(self) -> dict[tuple[str, str], Upstream]:
        return dict(self._upstreams)

    async def _each(self, client: str, fn: Callable[[Upstream], Awaitable[list[R]]]) -> list[R]:
        """Run ``fn`` on every enabled server at once; one failing server never fails the listing."""
        results: dict[str, list[R]] = {}

        async def one(entry: Entry) -> None:
            try:
                results[entry.name] = await fn(self.upstream(entry.name, client))
            except Exception as e:
                log.warning("server left out of listing: %s", e, extra={"server": entry.name})

        async with anyio.create_task_group() as tg:
            for entry in self.enabled_entries():
                tg.start_soon(one, entry)
        return [item for name in sorted(results) for item in results[name]]

    # -- tools -------------------------------------------------------------------------------

    def vet(self, server: str, tools: list[types.Tool]) -> list[types.Tool]:
        """The tools that match their pins. The first time a server is seen its tools are pinned,
        except those whose text looks poisoned: they stay out until `bosun catalog approve`."""
        low_trust = self.catalog.origin(server).trust == "low"

        def others() -> set[str]:
            # Only needed when a tool is scanned (first pin, or a tool off its pin): not per listing.
            return {e.name for e in self.enabled_entries()} - {server}

        def poisoned(tool: types.Tool) -> str | None:
            for f in scan(tool, others()):
                if self.settings.poisoning == "block" and (f.rule not in WEAK_RULES or low_trust):
                    return f"possibly poisoned ({f.rule} in {f.where}: {f.span!r})"
            return None

        pins = self.pins.load(server)
        if pins is None:
            for tool in tools:
                for f in scan(tool, others()):
                    log.warning("possible tool poisoning in %s %s (%s): %r", f.tool, f.where, f.rule, f.span,
                                extra={"server": server})  # fmt: skip
            pins = Pins.of(server, [t for t in tools if poisoned(t) is None])
            self.pins.save(pins)
            log.info("pinned %d of %d tools on first use", len(pins.tools), len(tools), extra={"server": server})
        approved = []
        for tool in tools:
            public = names.namespaced(server, tool.name)
            why = pins.verdict(tool)
            if why is not None:
                why = poisoned(tool) or why  # the poisoning, when there is one, says more than "new"
            if why is None:
                self._withheld.pop(public, None)
                approved.append(tool)
                continue
            self._withheld[public] = why
            if (public, tool_hash(tool)) not in self._reported:
                self._reported.add((public, tool_hash(tool)))
                log.warning("withholding tool %s: %s; review with `bosun catalog approve %s`", tool.name, why,
                            server, extra={"server": server})  # fmt: skip
        return approved

    async def list_tools(self, client: str) -> list[types.Tool]:
        async def tools_of(up: Upstream) -> list[types.Tool]:
            out = []
            agent = self.agent_of(client)
            groups = self.directory.groups(agent)
            for tool in self.vet(up.name, await up.list_tools()):
                public = names.namespaced(up.name, tool.name)
                self._tool_routes[public] = Route(up.name, tool.name)
                if not self.policy.never_allowed(agent, groups, up.name, tool.name):
                    out.append(tool.model_copy(update={"name": public}))
            return out

        async with self.audited("tools/list", client) as note:
            tools = await self._each(client, tools_of)
            note["detail"] = {"count": len(tools)}
            return tools

    async def _tool_route(self, client: str, public: str) -> Route:
        route = self._tool_routes.get(public)
        if route is None:
            try:
                server, _ = names.split(public)
            except ValueError as e:
                raise MCPError(types.INVALID_PARAMS, str(e)) from None
            for tool in self.vet(server, await self.upstream(server, client).list_tools()):
                self._tool_routes[names.namespaced(server, tool.name)] = Route(server, tool.name)
            route = self._tool_routes.get(public)
        if route is None:
            if why := self._withheld.get(public):
                server = names.split(public)[0]
                raise MCPError(
                    types.INVALID_PARAMS,
                    f"tool {public!r} is withheld: it is {why}; review it with `bosun catalog approve {server}`",
                )
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {public!r}")
        return route

    def bind(self, client: str, agent: str) -> None:
        """Record which agent a client key speaks for (the transports authenticate it)."""
        if self._agents.get(client) != agent:
            self._agents[client] = agent

    def agent_of(self, client: str) -> str:
        return self._agents.get(client, "")

    def audited(self, kind: str, client: str, **note: Any) -> Audited:
        """Audit the request run inside: the body fills in server, tool, decision and detail as it
        learns them; the record is committed before the answer leaves, whatever the answer is."""
        return Audited(self, kind, client, note)

    async def _keep(self, kind: str, client: str, note: dict[str, Any], started: float, outcome: str,
                    reason: str) -> None:  # fmt: skip
        server = str(note.get("server", ""))
        record = Record(
            kind,
            agent=self.agent_of(client),
            session=client,
            server=server,
            tool=str(note.get("tool", "")),
            decision=str(note.get("decision", "allow")),
            reason=str(note.get("reason", reason)),
            outcome=str(note.get("outcome", outcome)),
            image=self._image_of(server),
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            detail=note.get("detail", {}),
        )
        origin = note.get("origin")
        # Once chained, a later flow refusal that names this call names its record too.
        chained = partial(note["flow"].committed, origin) if origin is not None else None
        kept = self.committer.submit(record, chained)
        self.metrics.observe(kind, server, record.tool, record.decision, record.outcome,
                             record.duration_ms / 1000, record.detail)  # fmt: skip
        traces.annotate(record.agent, server, record.tool, record.decision, record.outcome)
        try:
            await kept
        except asyncio.CancelledError:
            self.committer.flush()  # the answer to a cancelled request does not leave before its record either
            raise

    async def call_tool(
        self,
        client: str,
        public: str,
        arguments: dict[str, Any] | None,
        progress: ProgressFn | None = None,
        downstream: Downstream | None = None,
    ) -> types.CallToolResult:
        """Decide, forward and screen one call, and audit it: decision, outcome and duration, and values only
        where the policy keeps them (redacted)."""
        server, _, tool = public.partition(names.SEPARATOR)
        async with self.audited("tools/call", client, server=server, tool=tool) as note:
            note["detail"] = {"args": shape(arguments or {})}
            agent = self.agent_of(client)
            policy = self.policy  # this call's view, even if the policy reloads while it runs
            flow = self.flows.get(client) if policy.flow.enabled else None
            if flow is not None:
                note["flow"] = flow
                note["origin"] = flow.next_call(public, policy.flow.labels(public, self._labels(server)))
            decision = await self._decide(policy, agent, public, arguments, flow, note.get("origin"))
            note["decision"], note["detail"]["rules"] = decision.effect, list(decision.rules)
            # Decided on what the agent sent; forwarded (and shown to a person) with every secret in it redacted.
            sent, redacted_args = self.redactor.value(arguments or {})
            keep_arguments, keep_results = policy.kept(server, tool)
            if keep_arguments:
                note["detail"]["arguments"] = json.dumps(sent, ensure_ascii=False)[:KEPT_CHARS]
            _note_redacted(note, "redacted_args", redacted_args, server)
            if decision.effect == "ask":
                decision = await self._ask(agent, server, tool, sent, decision, policy.policy, downstream)
                note["decision"], note["detail"]["asked"] = decision.effect, decision.reason
            if decision.effect == "deny":
                why = f"denied by policy ({', '.join(decision.rules) or 'default'})" + (
                    f": {decision.reason}" if decision.reason else ""
                )
                note["outcome"], note["reason"] = "refused", why
                return types.CallToolResult(content=[types.TextContent(type="text", text=why)], is_error=True)
            try:
                result, redacted = await self._call_tool(client, public, sent, progress, downstream)
            except MCPError as e:
                if "is withheld" in str(e):
                    note["decision"] = "deny"
                raise
            except UpstreamError as e:
                # A tool error, not a protocol error: the agent should see why and carry on.
                note["outcome"], note["reason"] = "refused", str(e)[:500]
                return types.CallToolResult(content=[types.TextContent(type="text", text=str(e))], is_error=True)
            text = text_of(result)  # what flow control remembers, screening reads and the audit may keep
            if flow is not None:
                policy.flow.after(flow, note["origin"], public, arguments, text)
            result, findings = policy.screener.screen(public, result, text)
            _note_screening(note, policy, findings)
            note["outcome"] = "error" if result.is_error else "ok"
            note["detail"]["result"] = {"items": len(result.content), "is_error": bool(result.is_error)}
            if keep_results:
                note["detail"]["result"]["text"] = text[:KEPT_CHARS]  # redacted above
            _note_redacted(note, "redacted", redacted, server)
            return result

    async def _ask(
        self, agent: str, server: str, tool: str, arguments: Any, decision: Decision, policy: Policy,
        downstream: Downstream | None,
    ) -> Decision:  # fmt: skip
        """A person decides: the calling client's user through elicitation when the policy and the client
        allow it, else whoever answers `bosun approve`/`bosun deny`."""
        if policy.ask_through == "client" and downstream is not None and downstream.supports(ELICITATION):
            request = asks.elicitation(agent, server, tool, arguments, decision)
            answer: types.ElicitResult | types.ErrorData | None = None
            with anyio.move_on_after(policy.ask_timeout_seconds):
                answer = await request_input(downstream, request, types.ElicitResult, ELICITATION)
            if answer is None:
                why = f"the client's user did not answer within {policy.ask_timeout_seconds:g}s (elicitation)"
                return Decision("deny", decision.rules, why)
            if isinstance(answer, types.ElicitResult):
                return asks.verdict(answer, decision)
            log.warning("the client could not ask its user (%s); waiting for `bosun approve` instead", answer.message)
        return await self.asks.ask(agent, server, tool, arguments, decision, policy)

    async def _decide(
        self, policy: Engine, agent: str, public: str, arguments: dict[str, Any] | None,
        flow: SessionFlow | None, origin: Origin | None,
    ) -> Decision:  # fmt: skip
        """The policy's rules, then (unless they deny) flow control on what the session has seen."""
        server, _, tool = public.partition(names.SEPARATOR)
        groups = self.directory.groups(agent)
        decision = policy.decide(agent, groups, server, tool, arguments)
        if flow is None or origin is None or decision.effect == "deny":
            return decision
        trip = policy.flow.check(flow, agent, groups, public, origin.labels, arguments)
        if trip is None:
            return decision
        # The refusal names the records of the calls it points at, once they are chained: chain them now (a
        # refusal is rare; the chainer takes milliseconds at most).
        if await self.journal.chain_now():
            trip = policy.flow.check(flow, agent, groups, public, origin.labels, arguments) or trip
        log.warning("flow control: %s: %s", trip.rule, trip.reason, extra={"server": server})
        return Decision(policy.flow.flow.on_violation, (*decision.rules, trip.rule), trip.reason)

    async def _call_tool(
        self,
        client: str,
        public: str,
        arguments: dict[str, Any] | None,
        progress: ProgressFn | None,
        downstream: Downstream | None,
    ) -> tuple[types.CallToolResult, set[str]]:
        route = await self._tool_route(client, public)
        upstream = self.upstream(route.server, client)
        with upstream.relay.serving(downstream):
            timeout_s = self.settings.call_timeout(route.server)
            result, source = await upstream.call_tool(route.name, arguments or {}, progress, timeout_s)
        return self.redactor.model(result, source)

    def _labels(self, server: str) -> list[str]:
        try:
            return self.catalog.get(server).labels
        except KeyError:
            return []

    def _image_of(self, server: str) -> str:
        return self._images.get(server, "")

    async def call_tool_bridged(
        self,
        client: str,
        params: types.CallToolRequestParams,
        progress: ProgressFn | None,
        downstream: Downstream,
    ) -> types.CallToolResult | types.InputRequiredResult:
        """``tools/call`` for a 2026-era client: server requests become ``InputRequiredResult`` rounds."""
        token = params.request_state
        if token is not None:
            bridge = self._bridges.get(token)
            if bridge is None or bridge.owner != client:
                raise MCPError(types.INVALID_PARAMS, "unknown or expired request_state")
            bridge.answer(params.input_responses or {})
        else:
            token = secrets.token_urlsafe(18)
            bridge = self._bridges[token] = InputBridge(client)
            bridged = replace(downstream, bridge=bridge)
            assert self._tg is not None
            self._tg.start_soon(self._run_bridged, token, bridge, client, params, progress, bridged)
        outcome = await bridge.next()
        if isinstance(outcome, types.CallToolResult):
            self._bridges.pop(token, None)
            return outcome
        return types.InputRequiredResult(input_requests=outcome, request_state=token)

    async def _run_bridged(
        self,
        token: str,
        bridge: InputBridge,
        client: str,
        params: types.CallToolRequestParams,
        progress: ProgressFn | None,
        downstream: Downstream,
    ) -> None:
        try:
            bridge.finish(await self.call_tool(client, params.name, params.arguments, progress, downstream))
        except Exception as e:
            bridge.finish(e)
        # A client that never collects the outcome must not leak it.
        await anyio.sleep(bridge.answer_timeout_s)
        self._bridges.pop(token, None)

    # -- prompts, resources, completion --------------------------------------------------------

    async def list_prompts(self, client: str) -> list[types.Prompt]:
        async def prompts_of(up: Upstream) -> list[types.Prompt]:
            session = await up.session_offering("prompts")
            if session is None:
                return []
            out = []
            for p in (await session.list_prompts()).prompts:
                public = names.namespaced(up.name, p.name)
                self._prompt_routes[public] = Route(up.name, p.name)
                out.append(p.model_copy(update={"name": public}))
            return out

        return await self._each(client, prompts_of)

    async def get_prompt(self, client: str, public: str, arguments: dict[str, str] | None) -> types.GetPromptResult:
        """A server's prompt, redacted. Not screened: a prompt is instructions for the model by design."""
        server, _, name = public.partition(names.SEPARATOR)
        async with self.audited(
            "prompts/get", client, server=server, tool=name, detail={"args": shape(arguments or {})}
        ) as note:
            result, redacted = self.redactor.model(await self._get_prompt(client, public, arguments))
            _note_redacted(note, "redacted", redacted, server)
            return result

    async def _get_prompt(self, client: str, public: str, arguments: dict[str, str] | None) -> types.GetPromptResult:
        route = self._prompt_routes.get(public)
        if route is None:
            await self.list_prompts(client)
            route = self._prompt_routes.get(public)
        if route is None:
            raise MCPError(types.INVALID_PARAMS, f"unknown prompt {public!r}")
        result = await (await self.upstream(route.server, client).session()).get_prompt(route.name, arguments)
        if not isinstance(result, types.GetPromptResult):
            raise MCPError(types.INTERNAL_ERROR, f"{route.server} answered prompts/get with an unsupported result")
        return result

    async def list_resources(self, client: str) -> list[types.Resource]:
        async def resources_of(up: Upstream) -> list[types.Resource]:
            session = await up.session_offering("resources")
            if session is None:
                return []
            listed = (await session.list_resources()).resources
            for r in listed:
                self._resource_routes[str(r.uri)] = up.name
            return listed

        return await self._each(client, resources_of)

    async def list_resource_templates(self, client: str) -> list[types.ResourceTemplate]:
        async def templates_of(up: Upstream) -> list[types.ResourceTemplate]:
            session = await up.session_offering("resources")
            if session is None:
                return []
            listed = (await session.list_resource_templates()).resource_templates
            for t in listed:
                self._template_routes[t.uri_template] = up.name
            return listed

        return await self._each(client, templates_of)

    def _resource_server(self, uri: str) -> str | None:
        if uri in self._resource_routes:
            return self._resource_routes[uri]
        for template, server in self._template_routes.items():
            try:
                if UriTemplate.parse(template).match(uri) is not None:
                    return server
            except ValueError:
                continue
        return None

    async def read_resource(self, client: str, uri: str) -> types.ReadResourceResult:
        """A resource, redacted, remembered by flow control like a tool's result, and screened."""
        async with self.audited("resources/read", client, server=self._resource_server(uri) or "") as note:
            result, server = await self._read_resource(client, uri)
            note["server"] = server
            result, redacted = self.redactor.model(result)
            _note_redacted(note, "redacted", redacted, server)
            policy, text = self.policy, text_of(result)
            if policy.flow.enabled:
                # Named server__uri, so policy labels can be given to a server's resources or to one of them.
                labels = policy.flow.labels(f"{server}{names.SEPARATOR}{uri}", self._labels(server))
                note["flow"] = flow = self.flows.get(client)
                note["origin"] = origin = flow.next_call(f"{server} resource {uri}", labels)
                flow.remember(origin, text)
            result, findings = policy.screener.screen_resource(uri, result, text)
            _note_screening(note, policy, findings)
            return result

    async def _resource_owner(self, client: str, uri: str) -> str:
        """The server offering ``uri``, listing resources first if the client never did."""
        server = self._resource_server(uri)
        if server is None:
            await self.list_resources(client)
            await self.list_resource_templates(client)
            server = self._resource_server(uri)
        if server is None:
            raise MCPError(types.INVALID_PARAMS, f"no enabled server offers resource {uri!r}")
        return server

    async def _read_resource(self, client: str, uri: str) -> tuple[types.ReadResourceResult, str]:
        server = await self._resource_owner(client, uri)
        result = await (await self.upstream(server, client).session()).read_resource(uri)
        if not isinstance(result, types.ReadResourceResult):
            raise MCPError(types.INTERNAL_ERROR, f"{server} answered resources/read with an unsupported result")
        return result, server

    async def subscribe(self, client: str, uri: str, notify: Callable[[str], Awaitable[None]]) -> None:
        """Tell ``client`` (through ``notify``) when ``uri`` changes; the owning server is subscribed once,
        however many clients follow the resource."""
        server = await self._resource_owner(client, uri)
        session = await self.upstream(server, client).session_offering("resources")
        caps = session.server_capabilities if session is not None else None
        if session is None or caps is None or caps.resources is None or not caps.resources.subscribe:
            raise MCPError(types.INVALID_PARAMS, f"{server} does not offer subscriptions to its resources")
        followers = self._subscribers.setdefault(uri, {})
        if not followers:
            await session.subscribe_resource(uri)
        followers[client] = notify

    async def unsubscribe(self, client: str, uri: str) -> None:
        followers = self._subscribers.get(uri, {})
        if followers.pop(client, None) is None or followers:
            return  # never followed by this client, or others still follow it
        del self._subscribers[uri]
        server = self._resource_server(uri)
        session = await self.upstream(server, client).session_offering("resources") if server else None
        if session is not None:
            with contextlib.suppress(MCPError):
                await session.unsubscribe_resource(uri)

    def _resource_updated(self, server: str, uri: str) -> None:
        assert self._tg is not None
        for client, notify in list(self._subscribers.get(uri, {}).items()):

            async def tell(notify: Callable[[str], Awaitable[None]] = notify, client: str = client) -> None:
                try:
                    await notify(uri)
                except Exception:
                    self._subscribers.get(uri, {}).pop(client, None)  # that client is gone

            self._tg.start_soon(tell)

    async def complete(self, client: str, params: types.CompleteRequestParams) -> types.CompleteResult:
        ref = params.ref
        if isinstance(ref, types.PromptReference):
            route = self._prompt_routes.get(ref.name)
            if route is None:  # a client may complete before it ever listed prompts
                await self.list_prompts(client)
                route = self._prompt_routes.get(ref.name)
            if route is None:
                raise MCPError(types.INVALID_PARAMS, f"unknown prompt {ref.name!r}")
            server, ref = route.server, types.PromptReference(type="ref/prompt", name=route.name)
        else:
            found = self._template_routes.get(ref.uri)
            if found is None:
                await self.list_resource_templates(client)
                found = self._template_routes.get(ref.uri)
            if found is None:
                raise MCPError(types.INVALID_PARAMS, f"unknown resource template {ref.uri!r}")
            server = found
        session = await self.upstream(server, client).session()
        ctx = params.context.arguments if params.context else None
        return await session.complete(ref, params.argument.model_dump(), ctx)
