"""Finding a Docker Engine, or installing and starting one on Debian.

Users on a laptop already run Docker; a fresh server or CI machine has nothing. ``ensure_engine``
covers both so that the set-up is one command: it never touches an engine that already answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException

Progress = Callable[[str], None]


class EngineError(RuntimeError):
    """The engine cannot be reached or started; the message says what to do."""


@dataclass(frozen=True)
class EngineInfo:
    version: str
    api_version: str
    storage_driver: str
    cgroup_version: str


def client(timeout: int = 120) -> docker.DockerClient:
    """A client for the engine named by ``DOCKER_HOST``, or the local socket."""
    return docker.from_env(timeout=timeout)


def probe() -> EngineInfo | None:
    """The engine's identity if one answers, otherwise None (never raises)."""
    try:
        c = client(timeout=5)
        try:
            v = c.version()
            info = c.info()
        finally:
            c.close()
    except DockerException:
        return None
    return EngineInfo(
        version=str(v.get("Version", "?")),
        api_version=str(v.get("ApiVersion", "?")),
        storage_driver=str(info.get("Driver", "?")),
        cgroup_version=str(info.get("CgroupVersion", "?")),
    )


def _is_debian() -> bool:
    return Path("/etc/debian_version").exists()


def apt_install(packages: list[str], progress: Progress) -> None:
    """Install Debian packages; only as root on Debian, otherwise explain what to run."""
    if not _is_debian() or os.geteuid() != 0:
        raise EngineError(f"missing {', '.join(packages)}: install with `sudo apt-get install -y {' '.join(packages)}`")
    progress(f"installing {', '.join(packages)} from Debian's archive")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *packages]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise EngineError(f"`{' '.join(cmd)}` failed:\n{r.stderr[-2000:]}")


def ensure_engine(log_dir: Path, progress: Progress = lambda _m: None, wait_s: float = 60) -> EngineInfo:
    """Return a running engine, installing (Debian's ``docker.io``) and starting ``dockerd`` if needed."""
    if info := probe():
        return info
    if os.environ.get("DOCKER_HOST"):
        raise EngineError(f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer; is that engine running?")
    if shutil.which("dockerd") is None:
        apt_install(["docker.io"], progress)
    if os.geteuid() != 0:
        raise EngineError("the Docker Engine is installed but not running: start it with `sudo systemctl start docker`")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "dockerd.log"
    progress(f"starting dockerd (log: {log_path})")
    with log_path.open("ab") as log:
        # A new session so the engine outlives this command and is not hit by its Ctrl-C.
        subprocess.Popen(["dockerd"], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if info := probe():
            progress(f"engine {info.version} is up")
            return info
        time.sleep(0.5)
    tail = log_path.read_text(errors="replace")[-1500:]
    raise EngineError(f"dockerd did not answer within {wait_s:.0f}s; last lines of {log_path}:\n{tail}")
