"""The official MCP conformance suite, through the gateway: every scenario our fixture passes directly
must pass through `bosun gateway run --server` with the fixture in its container, and the client
scenarios pass with the gateway as the client (scripts/conformance.py)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import docker
import mcp.types as types
import pytest
from _util import bosun_cmd, env_for
from mcp import Client, StdioServerParameters

from bosun.home import Home

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "conformance.py"
_spec = importlib.util.spec_from_file_location("conformance", SCRIPT)
assert _spec is not None and _spec.loader is not None
conformance = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conformance)
pytestmark = pytest.mark.anyio


def test_the_gateway_passes_every_scenario_the_fixture_passes(docker_client: docker.DockerClient) -> None:
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "every scenario that passes directly passes through the gateway" in run.stdout
    totals = re.search(r"checks passed\s+(\d+)/(\d+)\s+(\d+)/(\d+)", run.stdout)
    assert totals is not None, run.stdout
    direct, through = totals.group(1, 2), totals.group(3, 4)
    assert direct == through and int(direct[0]) == int(direct[1]) >= 40  # the whole active suite, both ways


def test_the_gateway_as_a_client_passes_the_suites_client_scenarios(docker_client: docker.DockerClient) -> None:
    """The suite's client mode against the gateway's upstream side: each mock server a remote behind Bosun."""
    run = subprocess.run([sys.executable, str(SCRIPT), "--client"], capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passing = re.search(r"(\d+) of (\d+) client scenarios pass", run.stdout)
    assert passing is not None and int(passing.group(1)) >= len(conformance.CLIENT_MUST_PASS), run.stdout


@pytest.fixture(scope="module")
def fixture_home(built_home: Home, tmp_path_factory: pytest.TempPathFactory) -> Home:
    home = Home(tmp_path_factory.mktemp("conformance") / "home")
    shutil.copytree(built_home.root, home.root)
    conformance.install_entry(home.ensure())
    return home


# Log levels and unsubscribe are handshake-era features (the 2026-07-28 protocol drops them); tested as such.
@pytest.mark.filterwarnings("ignore:.*as of 2026-07-28")
async def test_subscriptions_and_log_levels_through_a_one_server_gateway(fixture_home: Home) -> None:
    updates: list[str] = []
    logs: list[str] = []

    async def on_message(message: object) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(str(params.data))

    args = bosun_cmd("gateway", "run", "--server", "conformance")[1:]
    server = StdioServerParameters(command=sys.executable, args=args, env=env_for(fixture_home))
    async with Client(server, message_handler=on_message, logging_callback=on_log, mode="legacy") as client:
        assert "test_simple_text" in {t.name for t in (await client.list_tools()).tools}  # its own names
        await client.subscribe_resource("test://watched-resource")
        with anyio.fail_after(10):
            while not updates:
                await anyio.sleep(0.05)
        assert updates == ["test://watched-resource"]
        await client.set_logging_level("warning")
        await client.call_tool("test_tool_with_logging", {})
        assert logs == []  # info messages, below what this client asked for
        await client.set_logging_level("info")
        await client.call_tool("test_tool_with_logging", {})
        assert logs == ["Tool execution started", "Tool processing data", "Tool execution completed"]
        await client.unsubscribe_resource("test://watched-resource")
