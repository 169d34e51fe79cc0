"""Fixtures on the real engine. Without an engine these tests skip locally and FAIL in CI."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from _util import bosun_cmd, env_for
from fixtures.processes import free_port, started

from bosun.catalog.loader import load_catalog
from bosun.config import MountGrant, Settings
from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.images.base import BASE_PYTHON
from bosun.images.build import build_entry
from bosun.runtime import engine
from bosun.runtime.backend import LABEL_GATEWAY
from bosun.runtime.docker import DockerBackend

SERVERS = ("time", "memory", "filesystem", "everything", "fetch")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    if engine.probe() is None:
        msg = "no Docker Engine answers (run `bosun engine ensure`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; CI requires one", pytrace=False)
        pytest.skip(msg)
    c = engine.client()
    yield c
    c.close()


@pytest.fixture(scope="session")
def built_home(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Home:
    """A BOSUN_HOME with the test servers built (engine layer cache makes repeat builds quick)."""
    home = Home(tmp_path_factory.mktemp("bosun-home")).ensure()
    catalog = load_catalog()
    for name in SERVERS:  # base images are already built by scripts/test
        build_entry(docker_client, catalog.get(name), home, lambda _m: None)
    return home


@pytest.fixture
def home(built_home: Home, tmp_path: Path) -> Home:
    """A fresh home per test with the built images, their SBOMs, signatures and signing key."""
    h = Home(tmp_path / "home")
    shutil.copytree(built_home.root, h.root)
    h.ensure()
    files = tmp_path / "files"
    files.mkdir()
    (files / "note.txt").write_text("mounted read-only\n")
    settings = Settings()
    catalog = load_catalog()
    for name in ("time", "memory", "filesystem"):
        grants = [MountGrant(source=files, target="/projects")] if name == "filesystem" else []
        settings.enable(catalog.get(name), grants)
    settings.save(h.config_file)
    return h


@pytest.fixture
async def gateway(home: Home) -> AsyncIterator[Gateway]:
    async with Gateway(home, DockerBackend(), idle_timeout_s=300) as gw:
        yield gw
    left = await DockerBackend().list({LABEL_GATEWAY: gw.id})
    assert left == [], f"containers left after gateway exit: {[c.name for c in left]}"


@dataclass
class HttpGateway:
    url: str
    base: str
    token: str
    proc: subprocess.Popen[bytes]
    home: Home


@contextlib.contextmanager
def start_http_gateway(home: Home, *options: str, **env: str) -> Iterator[HttpGateway]:
    """``bosun gateway run --transport http [OPTIONS]`` as its own process, healthy, stopped with SIGTERM after."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = bosun_cmd("gateway", "run", "--transport", "http", "--port", str(port), *options)
    with started(argv, f"{base}/healthz", "the gateway", env={**env_for(home), **env}) as proc:
        yield HttpGateway(f"{base}/mcp", base, home.gateway_token()[0], proc, home)


@pytest.fixture
def http_gateway(home: Home) -> Iterator[HttpGateway]:
    with start_http_gateway(home) as gw:
        yield gw


# The "internet" of the egress tests: two small web servers of our own on the engine's default bridge.
SITE = (
    "import http.server, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = ('<html><body><p>' + sys.argv[1] + '</p></body></html>').encode()\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Type', 'text/html')\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "http.server.ThreadingHTTPServer(('0.0.0.0', 8000), H).serve_forever()\n"
)


@dataclass
class Sites:
    allowed: str  # ip:8000
    forbidden: str


@pytest.fixture(scope="module")
def sites(docker_client: docker.DockerClient) -> Iterator[Sites]:
    started = []
    addresses = []
    for word in ("allowed-site", "forbidden-site"):
        c = docker_client.containers.run(
            BASE_PYTHON, ["python3", "-c", SITE, word], detach=True, name=f"bosun-test-{word}-{uuid.uuid4().hex[:6]}",
            user="10001:10001", cap_drop=["ALL"], read_only=True,
        )  # fmt: skip
        started.append(c)
        c.reload()
        addresses.append(f"{c.attrs['NetworkSettings']['IPAddress']}:8000")
    yield Sites(*addresses)
    for c in started:
        c.remove(force=True)
