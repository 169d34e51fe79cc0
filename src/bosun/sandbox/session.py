"""One sandboxed agent session: a hardened container that sees its workspace and nothing else of the host.

The workspace is mounted read-write at the same path; files the agent must not change (its git hooks,
its MCP configuration) are mounted over it read-only; its home is a volume kept per workspace. No
network unless hosts are allowed, and then only through Bosun's egress proxy on an internal network
(the same topology server containers get). The container is created with Docker's API and the same
hardened host config as server containers; the terminal side is ``docker start --attach
--interactive``, run as a child, which carries the TTY, signals, window size and exit code.

A kit with an API (Claude Code, Codex) gets a sentinel in its key variable and its base URL pointed at
the proxy's credential route, where the real key is put on (``bosun.egress.inject``). With a gateway
agent, the gateway's socket is mounted in and the agent's MCP configuration names it
(``bosun.sandbox.relay``). Each session's start, end, egress decisions and credential uses are audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import docker

from bosun.audit.log import AuditLog, Record
from bosun.egress.inject import Credential
from bosun.images.base import SERVER_UID
from bosun.runtime.backend import ContainerSpec, Limits, Mount, SecretFile
from bosun.runtime.docker import DockerBackend, hardened_host_config, proxy_env
from bosun.sandbox.image import AGENT_HOME
from bosun.sandbox.kits import GATEWAY_SOCKET, KITS, Kit
from bosun.sandbox.relay import GatewayRelay

LABEL_SANDBOX = "io.bosun.sandbox"  # the workspace a container or home volume belongs to
CREDENTIAL_PORT = 3129  # the proxy's route for the kit's API key, next to its forward-proxy port
PROTECTED = (".git/hooks", ".git/config", ".mcp.json", ".bashrc", ".profile", ".envrc")


def session_user(workspace: Path) -> str:
    """The workspace owner's uid:gid, so what the agent writes belongs to the developer; never root (a
    root-owned workspace gets the unprivileged server uid, and can then be written only where it may)."""
    owner = workspace.stat()
    if owner.st_uid == 0:
        return f"{SERVER_UID}:{SERVER_UID}"
    return f"{owner.st_uid}:{owner.st_gid}"


@dataclass(frozen=True)
class Sandbox:
    workspace: Path
    kit: Kit = KITS["shell"]
    memory_mb: int = 4096
    cpus: float = 2.0
    pids: int = 1024
    protect: bool = True
    allow_hosts: tuple[str, ...] = ()
    api_url: str = ""  # the kit's API elsewhere (an in-house LLM gateway); empty: the kit's own
    api_ca: str = ""  # PEM of a private CA that API's certificate chains to
    gateway_agent: str | None = None  # the Bosun agent its MCP calls are made as; None: no gateway

    @property
    def key(self) -> str:
        return hashlib.sha256(str(self.workspace).encode()).hexdigest()[:12]

    @property
    def home_volume(self) -> str:
        return f"bosun-sandbox-home-{self.key}"

    def mounts(self) -> list[Mount]:
        # A named volume is given by name where a bind gives a path; the engine tells them apart.
        mounts = [
            Mount(self.workspace, str(self.workspace), read_only=False),
            Mount(Path(self.home_volume), AGENT_HOME, False),
        ]
        if self.protect:
            mounts += [
                Mount(self.workspace / p, str(self.workspace / p)) for p in PROTECTED if (self.workspace / p).exists()
            ]
        return mounts


def spec_of(sandbox: Sandbox, image: str, argv: list[str]) -> ContainerSpec:
    return ContainerSpec(
        name=f"bosun-sandbox-{sandbox.key}-{os.getpid()}",
        image=image,
        server="sandbox",
        command=argv,
        args=[],
        limits=Limits(sandbox.memory_mb, sandbox.cpus, sandbox.pids),
        user=session_user(sandbox.workspace),
        mounts=sandbox.mounts(),
        labels={LABEL_SANDBOX: str(sandbox.workspace)},
        egress=list(sandbox.allow_hosts),
    )


def sentinel() -> str:
    """What the agent holds instead of its key: shaped like one, unique to the session, worth nothing."""
    return f"sk-bosun-sentinel-{secrets.token_hex(16)}"


def credential_route(sandbox: Sandbox) -> Credential | None:
    """The proxy's route for the kit's key, to the kit's API or the one the user named; ValueError if not https."""
    api = sandbox.kit.api
    if api is None:
        return None
    return Credential(api.secret, CREDENTIAL_PORT, sandbox.api_url or api.upstream, api.header, api.prefix,
                      sandbox.api_ca)  # fmt: skip


def create(client: docker.DockerClient, sandbox: Sandbox, spec: ContainerSpec, tty: bool, env: dict[str, str],
           network: str | None) -> str:  # fmt: skip
    """The session's container, created (not started); removed by the engine when it exits."""
    api = client.api
    if not any(v.name == sandbox.home_volume for v in client.volumes.list(filters={"label": LABEL_SANDBOX})):
        client.volumes.create(sandbox.home_volume, labels={LABEL_SANDBOX: str(sandbox.workspace)})
    # With egress, the internal network is its only one and its resolver points nowhere: the proxy, named
    # by address, is the one way out. Without, no network at all.
    host = hardened_host_config(api, spec, network=network or "none", dns=["127.0.0.1"] if network else None)
    # Unlike a server, whose stdout is an MCP stream nobody else may keep, a session is attached to a
    # terminal; the engine still keeps no log of it.
    host["AutoRemove"] = True
    env = {"HOME": AGENT_HOME, **sandbox.kit.env, **(_terminal_env() if tty else {}), **env}
    created = api.create_container(
        spec.image, command=spec.command, user=spec.user, working_dir=str(sandbox.workspace), stdin_open=True,
        tty=tty, environment=env, labels=spec.labels, host_config=host, name=spec.name,
    )  # fmt: skip
    return str(created["Id"])


def _terminal_env() -> dict[str, str]:
    """TERM, and the size for programs that read it at once: the engine (API 1.41) sets the TTY's size only
    after the start, through the attached CLI."""
    env = {"TERM": os.environ.get("TERM", "xterm")}
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return env
    return env | {"COLUMNS": str(size.columns), "LINES": str(size.lines)}


class SessionAudit:
    """A sandbox session in the audit: its start and end, every egress decision, every credential put on."""

    def __init__(self, audit: AuditLog, sandbox: Sandbox, session: str) -> None:
        self.audit, self.sandbox, self.session = audit, sandbox, session
        self.agent = sandbox.gateway_agent or "sandbox"

    def record(self, kind: str, **fields: Any) -> None:
        self.audit.append(Record(kind=f"sandbox/{kind}", agent=self.agent, session=self.session,
                                 server=f"sandbox:{self.sandbox.kit.name}", **fields))  # fmt: skip

    def egress(self, decision: dict[str, Any]) -> None:
        kind = (
            "sentinel"
            if decision.get("event") == "sentinel"
            else "credential"
            if decision.get("injected")
            else "egress"
        )
        detail = {k: v for k, v in decision.items() if k not in ("ts", "event", "server", "allowed", "reason")}
        allowed = decision.get("allowed", True)
        self.record(kind, tool=str(decision.get("host", "")), decision="allow" if allowed else "deny",
                    reason=str(decision.get("reason", "")), outcome="ok" if allowed else "refused",
                    detail=detail)  # fmt: skip


async def run(client: docker.DockerClient, sandbox: Sandbox, spec: ContainerSpec, tty: bool, api_key: str | None,
              route: Credential | None, audit: AuditLog, log_dir: Path) -> int:  # fmt: skip
    """The session, start to end: egress (if any) up, the gateway's socket served, the container attached to
    this terminal, everything removed after; returns the agent's exit code."""
    if route is not None and api_key is None:
        raise ValueError(f"the {route.secret} route needs its key")
    backend = DockerBackend(client)
    trail = SessionAudit(audit, sandbox, spec.name)
    stand_in = sentinel()
    async with contextlib.AsyncExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bosun-sbx-")))
        env: dict[str, str] = {}
        mounts = list(spec.mounts)
        if sandbox.gateway_agent is not None:
            relay = GatewayRelay(work / "gateway.sock", sandbox.gateway_agent, log_dir / f"{spec.name}-gateway.log")
            await stack.enter_async_context(relay)
            mounts.append(Mount(relay.path, GATEWAY_SOCKET, read_only=False))
        network = base_url = None
        if spec.egress or route is not None:
            proxy_args, proxy_secrets = [], []
            if route is not None and api_key is not None:  # (both or neither, checked above)
                proxy_args = ["--credential", json.dumps(dataclasses.asdict(route)), "--sentinel", stand_in]
                proxy_secrets = [SecretFile(route.secret, None, api_key)]
            network, proxy_id, proxy_ip = await backend.start_egress(spec, trail.egress, proxy_args, proxy_secrets)
            stack.push_async_callback(_shielded, backend.stop_egress, network, proxy_id)
            env |= proxy_env(proxy_ip)
            if route is not None and sandbox.kit.api is not None:
                base_url = f"http://{proxy_ip}:{route.port}"
                env |= {sandbox.kit.api.env: stand_in, sandbox.kit.api.base_url_env: base_url}
                # The route is the proxy itself: asked through the forward port, it would be just another host.
                env |= {"NO_PROXY": proxy_ip, "no_proxy": proxy_ip}
        if managed := sandbox.kit.managed(base_url, sandbox.gateway_agent is not None):
            config = work / "managed-config"
            config.write_text(managed)
            config.chmod(0o644)
            mounts.append(Mount(config, sandbox.kit.managed_file))
        spec = dataclasses.replace(spec, mounts=mounts)
        container = create(client, sandbox, spec, tty, env, network)
        trail.record("start", image=spec.image, detail={
            "workspace": str(sandbox.workspace), "command": spec.command, "allow_hosts": spec.egress,
            "credential": route.secret if route else None, "gateway_agent": sandbox.gateway_agent,
        })  # fmt: skip
        started = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        # Ctrl-C is the agent's: it reaches the docker CLI (same process group), which passes it on. A
        # Python handler, unlike SIG_IGN, is not inherited by the child.
        previous = signal.signal(signal.SIGINT, lambda *_: None)
        loop = asyncio.get_running_loop()
        try:
            child = await asyncio.create_subprocess_exec("docker", "start", "--attach", "--interactive", container)
            # Terminated or hung up on, the session ends as the agent's does (the docker CLI passes the signal on),
            # and this process lives on to remove the proxy and network.
            for ending in (signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(ending, child.send_signal, ending)
            code = await child.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
            for ending in (signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(ending)
            # The engine removes a container that ran; one that never started (docker start failed) stays unless
            # removed here, and it would hold the network the proxy is on.
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.api.remove_container(container, force=True)
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        trail.record("stop", outcome="ok" if code == 0 else "error", duration_ms=elapsed_ms, detail={"exit_code": code})
        return code


async def _shielded(stop: Callable[[str, str], Awaitable[None]], network: str, proxy_id: str) -> None:
    with anyio.CancelScope(shield=True):
        await stop(network, proxy_id)


def homes(client: docker.DockerClient) -> list[tuple[str, str]]:
    """(home volume, workspace) of every sandbox kept on this machine."""
    return [
        (v.name, v.attrs.get("Labels", {}).get(LABEL_SANDBOX, ""))
        for v in client.volumes.list(filters={"label": LABEL_SANDBOX})
    ]
