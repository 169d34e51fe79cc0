"""Imported server.json entries are built from their real packages and served like any other."""

from __future__ import annotations

from pathlib import Path

import pytest
from _util import run_bosun

from bosun.config import Settings
from bosun.gateway.core import Gateway
from bosun.home import Home
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
