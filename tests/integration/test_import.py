"""Other catalogs, imported or followed as sources, build from their real packages and serve like any other."""

from __future__ import annotations

from pathlib import Path

import pytest
from _util import run_bosun

from bosun.catalog.signing import attestation_path
from bosun.config import Settings
from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.images.lock import Lock
from bosun.runtime.docker import DockerBackend

pytestmark = pytest.mark.anyio

SAMPLES = Path(__file__).parent.parent / "samples" / "registry"


async def test_import_build_and_call(home: Home) -> None:
    out = run_bosun(home, "catalog", "import", str(SAMPLES)).stdout
    assert "-> time-server" in out and "-> knowledge-graph" in out and "2 entries written" in out
    assert "remote servers are not supported yet" in out
    assert (home.root / "catalog" / "time-server.yaml").exists()
    again = run_bosun(home, "catalog", "import", str(SAMPLES / "time"))
    assert "exists: not replaced" in again.stderr

    run_bosun(home, "catalog", "build", "time-server", "knowledge-graph")
    settings = Settings.load(home.config_file)
    for name in ("time-server", "knowledge-graph"):
        settings.servers[name] = settings.servers["time"].model_copy()
    settings.save(home.config_file)
    async with Gateway(home, DockerBackend()) as gw:
        now = await gw.call_tool("t", "time-server__get_current_time", {"timezone": "UTC"})
        assert not now.is_error and "UTC" in now.content[0].text  # type: ignore[union-attr]
        graph = await gw.call_tool("t", "knowledge-graph__read_graph", {})
        assert not graph.is_error, graph


DOCKER = Path(__file__).parent.parent / "samples" / "docker"
CLOCK = "clock=pypi:mcp-server-time==2026.10.19"


async def test_import_docker_formats_reports_every_server(home: Home) -> None:
    r = run_bosun(home, "catalog", "import", str(DOCKER), "--package", CLOCK, "--dry-run")
    out = r.stdout
    assert "servers/clock/server.yaml -> clock" in out and "catalog.yaml#runner -> -" in out
    assert "type poci: only 'server' entries run" in out and "--package files=pypi:NAME==VERSION" in out
    assert "0 entries written" in out and not (home.root / "catalog").exists()
    bad = run_bosun(home, "catalog", "import", str(DOCKER), "--package", "clock", check=False)
    assert bad.returncode == 1 and "write NAME=pypi:PKG==VERSION" in bad.stderr


async def test_low_trust_source_may_run_unsigned_only_when_allowed(home: Home) -> None:
    clock_dir = str(DOCKER / "servers" / "clock")
    refused = run_bosun(home, "catalog", "add", "lab", clock_dir, "--trust", "medium", "--allow-unsigned", check=False)
    assert refused.returncode == 1 and "only a low-trust source may allow unsigned images" in refused.stderr
    out = run_bosun(home, "catalog", "add", "lab", clock_dir, "--allow-unsigned", "--package", CLOCK).stdout
    assert "added source lab (low trust): 1 usable of 1 servers" in out
    listing = run_bosun(home, "catalog", "ls-sources").stdout
    assert "lab" in listing and "allowed" in listing
    run_bosun(home, "catalog", "build", "clock")
    clock_id = Lock.load(home.lock_file).images["clock"].image_id
    attestation_path(home.root, clock_id).unlink()  # as if built where no signing key was at hand
    settings = Settings.load(home.config_file)
    settings.servers["clock"] = settings.servers["time"].model_copy()
    settings.save(home.config_file)

    async def call() -> str:
        async with Gateway(home, DockerBackend()) as gw:
            result = await gw.call_tool("t", "clock__get_current_time", {"timezone": "UTC"})
            return ("error: " if result.is_error else "") + str(result.content[0].text)  # type: ignore[union-attr]

    assert "UTC" in await call() and not (await call()).startswith("error")
    run_bosun(home, "catalog", "rm", "lab")
    run_bosun(home, "catalog", "add", "lab", clock_dir, "--package", CLOCK)
    refusal = await call()
    assert refusal.startswith("error") and "clock: image" in refusal and "is not signed" in refusal
