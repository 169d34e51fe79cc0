"""Agent identity over HTTP: tokens name agents, sessions stay with the agent that opened them,
revocation takes effect on a running gateway, and the audit says who called."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import jwt
from _util import audit_log, open_session, post, run_bosun
from conftest import HttpGateway, start_http_gateway
from cryptography.hazmat.primitives.asymmetric import rsa

from bosun.home import Home

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
    # Nor with the id twice, hers first and his own last: the session checked is the one that would be served.
    bob_sid = open_session(http_gateway, bob)
    twice = httpx.post(http_gateway.url, json=CALL, timeout=60, headers=[
        ("authorization", f"Bearer {bob}"), ("accept", "application/json, text/event-stream"),
        ("mcp-session-id", sid), ("mcp-session-id", bob_sid),
    ])  # fmt: skip
    assert twice.status_code == 403 and "belongs to another agent" in twice.text

    # A client cannot claim another agent by header: the gateway sets it from the token.
    assert post(http_gateway, bob, CALL, **{"mcp-session-id": bob_sid, "x-bosun-agent": "alice"}).status_code == 200
    calls = [r for r in audit_log(home).records() if r.kind == "tools/call"]
    assert [r.agent for r in calls] == ["alice", "bob"]

    run_bosun(home, "agent", "revoke", "alice")
    after = post(http_gateway, alice, CALL, **{"mcp-session-id": sid})
    assert after.status_code == 401
    assert post(http_gateway, "bsn_not-a-token", CALL).status_code == 401
    assert "revoked" in run_bosun(home, "agent", "ls").stdout


def test_oidc_tokens_name_agents_and_other_audiences_are_refused(home: Home, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())) | {"kid": "k1"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    out = run_bosun(home, "agent", "oidc", "--issuer", "https://login.acme.example/", "--audience", "bosun",
                    "--jwks", str(tmp_path / "jwks.json")).stdout  # fmt: skip
    assert "accepting JWTs from https://login.acme.example/ for audience bosun" in out
    home.policy_file.write_text("rules:\n  - {id: no-interns, effect: deny, groups: [interns], tools: [time__*]}\n")

    def issued(sub: str, groups: list[str], aud: str = "bosun") -> str:
        claims = {"iss": "https://login.acme.example/", "aud": aud, "sub": sub, "groups": groups,
                  "exp": int(time.time()) + 300}  # fmt: skip
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})

    with start_http_gateway(home) as gw:
        carol = issued("carol@acme.example", ["staff"])
        sid = open_session(gw, carol)
        assert "Europe" not in post(gw, carol, CALL, **{"mcp-session-id": sid}).text  # answered, in UTC
        intern = issued("ivan@acme.example", ["interns"])
        refused = post(gw, intern, CALL, **{"mcp-session-id": open_session(gw, intern)})
        assert "denied by policy (no-interns)" in refused.text  # groups come from the token
        assert post(gw, issued("carol@acme.example", ["staff"], aud="payroll"), CALL).status_code == 401
        assert post(gw, issued("operator", []), CALL).status_code == 401
    calls = [r for r in audit_log(home).records() if r.kind == "tools/call"]
    assert [(r.agent, r.decision) for r in calls] == [("carol@acme.example", "allow"), ("ivan@acme.example", "deny")]
