"""One sandboxed agent session: a hardened container that sees its workspace and nothing else of the host.

The workspace is mounted read-write at the same path; files the agent must not change (its git hooks,
its MCP configuration) are mounted over it read-only; its home is a volume kept per workspace. No
network unless hosts are allowed, and then only through Bosun's egress proxy on an internal network
(the same topology server containers get). The container is created with Docker's API and the same
hardened host config as server containers; the terminal side is ``docker start --attach
--interactive``, run as a child, which carries the TTY, signals, window size and exit code.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import anyio
import docker

from bosun.images.base import SERVER_UID
from bosun.runtime.backend import ContainerSpec, Limits, Mount
from bosun.runtime.docker import DockerBackend, hardened_host_config, proxy_env
from bosun.sandbox.image import AGENT_HOME

LABEL_SANDBOX = "io.bosun.sandbox"  # the workspace a container or home volume belongs to
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
    kit: str = "shell"
    memory_mb: int = 4096
    cpus: float = 2.0
    pids: int = 1024
    protect: bool = True
    allow_hosts: tuple[str, ...] = ()

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


def create(client: docker.DockerClient, sandbox: Sandbox, spec: ContainerSpec, tty: bool, proxy_ip: str | None,
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
    env = {"HOME": AGENT_HOME, **({"TERM": os.environ.get("TERM", "xterm")} if tty else {})}
    env |= proxy_env(proxy_ip) if proxy_ip else {}
    created = api.create_container(
        spec.image, command=spec.command, user=spec.user, working_dir=str(sandbox.workspace), stdin_open=True,
        tty=tty, environment=env, labels=spec.labels, host_config=host, name=spec.name,
    )  # fmt: skip
    return str(created["Id"])


async def run(client: docker.DockerClient, sandbox: Sandbox, spec: ContainerSpec, tty: bool) -> int:
    """The session, start to end: egress (if any) up, the container attached to this terminal, everything
    removed after; returns the agent's exit code."""
    backend = DockerBackend(client)
    network = proxy_id = proxy_ip = None
    if spec.egress:
        network, proxy_id, proxy_ip = await backend.start_egress(spec, None)  # decisions go to the egress log
    try:
        container = create(client, sandbox, spec, tty, proxy_ip, network)
        sys.stdout.flush()
        sys.stderr.flush()
        # Ctrl-C is the agent's: it reaches the docker CLI (same process group), which passes it on. A
        # Python handler, unlike SIG_IGN, is not inherited by the child.
        previous = signal.signal(signal.SIGINT, lambda *_: None)
        try:
            child = await asyncio.create_subprocess_exec("docker", "start", "--attach", "--interactive", container)
            return await child.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
    finally:
        if network is not None and proxy_id is not None:
            with anyio.CancelScope(shield=True):
                await backend.stop_egress(network, proxy_id)


def homes(client: docker.DockerClient) -> list[tuple[str, str]]:
    """(home volume, workspace) of every sandbox kept on this machine."""
    return [
        (v.name, v.attrs.get("Labels", {}).get(LABEL_SANDBOX, ""))
        for v in client.volumes.list(filters={"label": LABEL_SANDBOX})
    ]
