"""`bosun client connect`: the entry it writes into a client's file starts a working gateway, as the client
would start it, and the calls are audited as that client's own agent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest
from _util import audit_log, bosun_cmd
from mcp import Client, StdioServerParameters

from bosun.home import Home

pytestmark = pytest.mark.anyio


async def test_a_connected_client_reaches_the_gateway_as_its_own_agent(home: Home, tmp_path: Path) -> None:
    env = {**os.environ, "BOSUN_HOME": str(home.root), "HOME": str(tmp_path)}
    cursor_file = tmp_path / ".cursor" / "mcp.json"
    cursor_file.parent.mkdir()
    cursor_file.write_text(json.dumps({"mcpServers": {"other": {"command": "other-mcp"}}}))

    connected = await anyio.run_process(bosun_cmd("client", "connect", "cursor"), env=env)
    assert b"connected Cursor" in connected.stdout and b"agent cursor created" in connected.stderr
    entry = json.loads(cursor_file.read_text())["mcpServers"]["bosun"]
    assert set(json.loads(cursor_file.read_text())["mcpServers"]) == {"other", "bosun"}
    assert not any("token" in str(v).lower() or "bearer" in str(v).lower() for v in entry.values())

    # Started exactly as Cursor would start it, from what the file says.
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env={**os.environ, **entry["env"]})
    async with Client(params) as client:
        result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert not result.is_error
    calls = [r for r in audit_log(home).records() if r.kind == "tools/call"]
    assert [(r.agent, r.tool) for r in calls] == [("cursor", "get_current_time")]

    listed = await anyio.run_process(bosun_cmd("client", "ls", "--json"), env=env)
    assert {r["client"]: r["connected"] for r in json.loads(listed.stdout)}["cursor"] == "yes"
    await anyio.run_process(bosun_cmd("client", "disconnect", "cursor"), env=env)
    assert json.loads(cursor_file.read_text()) == {"mcpServers": {"other": {"command": "other-mcp"}}}
