"""Agent identity over HTTP: tokens name agents, sessions stay with the agent that opened them,
revocation takes effect on a running gateway, and the audit says who called."""

from __future__ import annotations

import json

import httpx
from _util import run_bosun
from conftest import HttpGateway

from bosun.audit.log import AuditLog

HELLO = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}}  # fmt: skip


def post(gw: HttpGateway, token: str, body: dict[str, object], **headers: str) -> httpx.Response:
    return httpx.post(
        gw.url,
        json=body,
        timeout=60,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream", **headers},
    )


def open_session(gw: HttpGateway, token: str) -> str:
    r = post(gw, token, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": HELLO})
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    post(gw, token, {"jsonrpc": "2.0", "method": "notifications/initialized"}, **{"mcp-session-id": sid})
    return sid


def test_tokens_name_agents_and_sessions_stay_theirs(http_gateway: HttpGateway) -> None:
    home = http_gateway.home
    alice = run_bosun(home, "agent", "add", "alice", "--group", "dev").stdout.strip()
    bob = run_bosun(home, "agent", "add", "bob").stdout.strip()
    assert alice.startswith("bsn_") and alice not in (home.root / "agents.yaml").read_text()
    listed = {a["name"]: a for a in json.loads(run_bosun(home, "agent", "ls", "--json").stdout)}
    assert listed["alice"]["groups"] == "dev" and listed["bob"]["state"] == "active"

    sid = open_session(http_gateway, alice)  # the gateway read the agents file as it changed
    assert post(http_gateway, alice, CALL, **{"mcp-session-id": sid}).status_code == 200
    stolen = post(http_gateway, bob, CALL, **{"mcp-session-id": sid})
    assert stolen.status_code == 403 and "belongs to another agent" in stolen.text

    # A client cannot claim another agent by header: the gateway sets it from the token.
    bob_sid = open_session(http_gateway, bob)
    assert post(http_gateway, bob, CALL, **{"mcp-session-id": bob_sid, "x-bosun-agent": "alice"}).status_code == 200
    calls = [r for r in AuditLog(home.audit_db).records() if r.kind == "tools/call"]
    assert [r.agent for r in calls] == ["alice", "bob"]

    run_bosun(home, "agent", "revoke", "alice")
    after = post(http_gateway, alice, CALL, **{"mcp-session-id": sid})
    assert after.status_code == 401
    assert post(http_gateway, "bsn_not-a-token", CALL).status_code == 401
    assert "revoked" in run_bosun(home, "agent", "ls").stdout
