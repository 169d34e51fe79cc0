"""One sandboxed agent session: a hardened container that sees its workspace and nothing else of the host.

The workspace is mounted read-write at the same path; files the agent must not change (its git hooks,
its MCP configuration) are mounted over it read-only; its home is a volume kept per workspace. No
network in this slice (egress through Bosun's proxy is the next one). The container is created with
Docker's API and the same hardened host config as server containers; the session itself is handed to
``docker start --attach --interactive``, which carries the TTY, signals, window size and exit code.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import docker

from bosun.images.base import SERVER_UID
from bosun.runtime.backend import ContainerSpec, Limits, Mount
from bosun.runtime.docker import hardened_host_config
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


def create(client: docker.DockerClient, sandbox: Sandbox, image: str, argv: list[str], tty: bool) -> str:
    """The session's container, created (not started); removed by the engine when it exits."""
    api = client.api
    if not any(v.name == sandbox.home_volume for v in client.volumes.list(filters={"label": LABEL_SANDBOX})):
        client.volumes.create(sandbox.home_volume, labels={LABEL_SANDBOX: str(sandbox.workspace)})
    spec = ContainerSpec(
        name=f"bosun-sandbox-{sandbox.key}-{os.getpid()}",
        image=image,
        server="",
        command=argv,
        args=[],
        limits=Limits(sandbox.memory_mb, sandbox.cpus, sandbox.pids),
        user=session_user(sandbox.workspace),
        mounts=sandbox.mounts(),
    )
    host = hardened_host_config(api, spec)
    # Unlike a server, whose stdout is an MCP stream nobody else may keep, a session is attached to a
    # terminal; the engine still keeps no log of it.
    host["AutoRemove"] = True
    created = api.create_container(
        image, command=argv, user=spec.user, working_dir=str(sandbox.workspace), stdin_open=True, tty=tty,
        environment={"HOME": AGENT_HOME, "TERM": os.environ.get("TERM", "xterm")} if tty else {"HOME": AGENT_HOME},
        labels={LABEL_SANDBOX: str(sandbox.workspace)}, host_config=host, name=spec.name,
    )  # fmt: skip
    return str(created["Id"])


def attach(container_id: str) -> None:
    """Become ``docker start -ai``: the TTY, signals, window size and the exit code are the CLI's to carry."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp("docker", ["docker", "start", "--attach", "--interactive", container_id])


def homes(client: docker.DockerClient) -> list[tuple[str, str]]:
    """(home volume, workspace) of every sandbox kept on this machine."""
    return [
        (v.name, v.attrs.get("Labels", {}).get(LABEL_SANDBOX, ""))
        for v in client.volumes.list(filters={"label": LABEL_SANDBOX})
    ]
