"""Agent identity over HTTP: tokens name agents, sessions stay with the agent that opened them,
revocation takes effect on a running gateway, and the audit says who called."""

from __future__ import annotations

import json

from _util import open_session, post, run_bosun
from conftest import HttpGateway

from bosun.audit.log import AuditLog

CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}}  # fmt: skip


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
