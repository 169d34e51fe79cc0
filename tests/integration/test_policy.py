"""Central policy on the real engine: filtered listings, argument rules, ask with CLI approval and
timeout, rate limits, reload on change, explanations, and every decision in the audit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import mcp.types as types
import pytest
from _util import audit_log, bosun_cmd, env_for, run_bosun
from mcp import Client, StdioServerParameters

from bosun.gateway.agents import Agents
from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.policy.asks import Asks
from bosun.runtime.docker import DockerBackend

pytestmark = pytest.mark.anyio

POLICY = """
ask_timeout_seconds: 20
rules:
  - id: interns-no-convert
    effect: deny
    groups: [interns]
    tools: [time__convert_time]
    reason: interns only read the clock
  - id: no-asia
    effect: deny
    tools: [get_current_time]
    when: [{arg: timezone, regex: "^Asia/"}]
  - id: graph-needs-a-person
    effect: ask
    servers: [memory]
    tools: [read_graph]
  - id: clock-rate
    tools: [get_current_time]
    agents: [bob]
    rate: {calls: 2, per_seconds: 60}
"""


def setup(home: Home, policy: str = POLICY) -> None:
    agents = Agents.load(home.agents_file)
    agents.add("alice", ["interns"])
    agents.add("bob", [])
    agents.save(home.agents_file)
    home.policy_file.write_text(policy)


def text(result: object) -> str:
    return str(result.content[0].text)  # type: ignore[attr-defined]


async def answer_when_asked(home: Home, verb: str) -> None:
    asks = Asks(home.asks_dir)
    with anyio.fail_after(20):
        while not asks.pending():
            await anyio.sleep(0.1)
    pending = asks.pending()[0]
    assert pending["agent"] == "bob" and pending["tool"] == "read_graph"
    await anyio.to_thread.run_sync(lambda: run_bosun(home, verb, pending["id"]))


async def test_policy_decides_and_explains(home: Home) -> None:
    setup(home)
    async with Gateway(home, DockerBackend()) as gw:
        gw.bind("a", "alice")
        gw.bind("b", "bob")
        assert "time__convert_time" not in {t.name for t in await gw.list_tools("a")}  # never allowed to alice
        assert "time__convert_time" in {t.name for t in await gw.list_tools("b")}
        refused = await gw.call_tool("a", "time__convert_time",
                                     {"source_timezone": "UTC", "time": "12:00", "target_timezone": "UTC"})  # fmt: skip
        assert refused.is_error and "denied by policy (interns-no-convert): interns only read the clock" in text(
            refused
        )
        asia = await gw.call_tool("a", "time__get_current_time", {"timezone": "Asia/Tokyo"})
        assert asia.is_error and "no-asia" in text(asia)
        assert not (await gw.call_tool("a", "time__get_current_time", {"timezone": "Europe/Oslo"})).is_error

        # ask: a person approves with the CLI while the call waits; then another denies
        async with anyio.create_task_group() as tg:
            tg.start_soon(answer_when_asked, home, "approve")
            approved = await gw.call_tool("b", "memory__read_graph", {})
        assert not approved.is_error
        async with anyio.create_task_group() as tg:
            tg.start_soon(answer_when_asked, home, "deny")
            denied = await gw.call_tool("b", "memory__read_graph", {})
        assert denied.is_error and "denied by" in text(denied)

        # rate: bob gets two clock reads a minute
        results = [await gw.call_tool("b", "time__get_current_time", {"timezone": "UTC"}) for _ in range(3)]
        assert [r.is_error for r in results] == [False, False, True] and "clock-rate" in text(results[2])

        # reload: a new rule applies without restarting; an invalid file is ignored, the last good one kept
        home.policy_file.write_text(POLICY + "  - {id: stop-bob, effect: deny, agents: [bob], servers: [memory]}\n")
        with anyio.fail_after(10):
            while "memory__read_graph" in {t.name for t in await gw.list_tools("b")}:
                await anyio.sleep(0.3)
        home.policy_file.write_text("rules: [{id: x, effect: perhaps}]\n")
        await anyio.sleep(2.5)
        assert "memory__read_graph" not in {t.name for t in await gw.list_tools("b")}

    calls = [r for r in audit_log(home).records() if r.kind == "tools/call"]
    first = calls[0]
    assert (first.agent, first.decision, first.outcome) == ("alice", "deny", "refused")
    assert first.detail["rules"] == ["interns-no-convert"]
    asked = [r for r in calls if r.tool == "read_graph"]
    assert [(r.decision, r.outcome) for r in asked] == [("allow", "ok"), ("deny", "refused")]
    assert "approved by" in asked[0].detail["asked"]


async def test_ask_times_out_as_a_deny(home: Home) -> None:
    setup(home, POLICY.replace("ask_timeout_seconds: 20", "ask_timeout_seconds: 1"))
    async with Gateway(home, DockerBackend()) as gw:
        gw.bind("b", "bob")
        result = await gw.call_tool("b", "memory__read_graph", {})
    assert result.is_error and "nobody approved within 1s" in text(result)
    assert Asks(home.asks_dir).pending() == []


def test_policy_check_and_table(home: Home, tmp_path: Path) -> None:
    setup(home)
    out = run_bosun(home, "policy", "check", "--agent", "alice", "--tool", "time__convert_time").stdout
    assert out.startswith("deny by interns-no-convert: interns only read the clock")
    assert "no-asia: skipped (tool not named)" in out
    explained = json.loads(run_bosun(home, "policy", "check", "--agent", "bob", "--tool", "time__get_current_time",
                                     "--json", '{"timezone": "Asia/Seoul"}', "--format-json").stdout)  # fmt: skip
    assert explained["effect"] == "deny" and explained["rules"] == ["no-asia"]
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n"
        "  - {agent: alice, tool: time__convert_time, expect: deny}\n"
        "  - {agent: bob, tool: time__convert_time, expect: allow}\n"
        "  - {agent: bob, tool: memory__read_graph, expect: allow}\n"
    )
    r = run_bosun(home, "policy", "test", str(cases), check=False)
    assert r.returncode == 1 and "2 of 3 cases as expected" in r.stdout and "FAIL" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [{id: r9, effect: deny, when: [{arg: x, regex: '['}]}]\n")
    check = run_bosun(home, "policy", "check", "--agent", "a", "--tool", "t__x", "--file", str(bad), check=False)
    assert check.returncode == 1 and "rule 'r9' (rules[0]): when[0].regex" in check.stderr


ELICIT_POLICY = """
rules:
  - {id: convert-needs-a-person, effect: ask, tools: [time__convert_time], reason: conversions are audited}
"""
CONVERT = {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Europe/Paris"}


@pytest.mark.parametrize("mode", ["legacy", "auto"], ids=["handshake-era", "2026-era"])
async def test_ask_goes_to_the_calling_clients_user_through_elicitation(home: Home, mode: str) -> None:
    home.policy_file.write_text(ELICIT_POLICY)
    answers = [True, False]
    shown: list[str] = []

    async def user(ctx: object, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        shown.append(params.message)
        return types.ElicitResult(action="accept", content={"approve": answers.pop(0)})

    params = StdioServerParameters(command=sys.executable, args=bosun_cmd("gateway", "run")[1:], env=env_for(home))
    async with Client(params, elicitation_callback=user, mode=mode) as client:
        approved = await client.call_tool("time__convert_time", CONVERT)
        assert not approved.is_error and "Europe/Paris" in text(approved)
        declined = await client.call_tool("time__convert_time", CONVERT)
        assert declined.is_error and "the client's user did not approve the call (elicitation)" in text(declined)
    assert "rule convert-needs-a-person (conversions are audited)" in shown[0]
    assert "Agent 'operator' wants to call time__convert_time" in shown[0] and '"Europe/Paris"' in shown[0]
    calls = [r for r in audit_log(home).records() if r.kind == "tools/call"]
    assert [(r.decision, r.detail["asked"]) for r in calls] == [
        ("allow", "approved by the client's user (elicitation)"),
        ("deny", "the client's user did not approve the call (elicitation)"),
    ]


async def test_ask_through_cli_ignores_a_client_that_could_answer_for_itself(home: Home) -> None:
    home.policy_file.write_text(ELICIT_POLICY + "ask_through: cli\nask_timeout_seconds: 30\n")

    async def must_not_be_asked(ctx: object, params: types.ElicitRequestParams) -> types.ElicitResult:
        raise AssertionError("the policy said to ask through the CLI")

    async def approve() -> None:
        asks = Asks(home.asks_dir)
        with anyio.fail_after(30):
            while not asks.pending():
                await anyio.sleep(0.1)
        await anyio.to_thread.run_sync(lambda: run_bosun(home, "approve", asks.pending()[0]["id"]))

    params = StdioServerParameters(command=sys.executable, args=bosun_cmd("gateway", "run")[1:], env=env_for(home))
    async with Client(params, elicitation_callback=must_not_be_asked) as client, anyio.create_task_group() as tg:
        tg.start_soon(approve)
        result = await client.call_tool("time__convert_time", CONVERT)
    assert not result.is_error and "Europe/Paris" in text(result)
