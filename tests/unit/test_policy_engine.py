"""Policy decisions as tables: effects, precedence, argument tests, rate limits, explanations, errors."""

from __future__ import annotations

import pytest

from bosun.policy.engine import Engine
from bosun.policy.rules import PolicyError, parse

POLICY = """
default: allow
rules:
  - id: interns-read-only
    effect: deny
    groups: [interns]
    servers: [filesystem]
    tools: ["write_*", edit_file]
    reason: interns may not write
  - id: secret-folder
    effect: deny
    tools: [filesystem__read_*]
    when: [{arg: path, regex: "^/projects/secret/"}]
    reason: the secret folder is off limits
  - id: big-payments-ask
    effect: ask
    servers: [bank]
    tools: [pay]
    when: [{arg: amount, range: {min: 1000}}]
  - id: payments-to-known
    effect: deny
    servers: [bank]
    tools: [pay]
    when: [{arg: to.account, one_of: [ATTACKER-1]}]
  - id: mail-to-staff
    effect: allow
    tools: [send_mail]
    when: [{arg: "message.to[0]", regex: "@corp\\\\.internal\\\\.test$"}]
  - id: no-mail-otherwise
    effect: ask
    tools: [send_mail]
  - id: bot-only
    effect: deny
    agents: [ci-bot]
    tools: ["*"]
    servers: [git]
  - id: fetch-rate
    tools: [fetch]
    rate: {calls: 2, per_seconds: 60}
"""


@pytest.fixture
def engine() -> Engine:
    return Engine(parse(POLICY, "policy.yaml"))


@pytest.mark.parametrize(
    ("agent", "groups", "server", "tool", "args", "effect", "rules"),
    [
        ("ann", ["interns"], "filesystem", "write_file", {"path": "/projects/a"}, "deny", ("interns-read-only",)),
        ("ann", ["interns"], "filesystem", "read_file", {"path": "/projects/a"}, "allow", ()),
        ("bob", [], "filesystem", "write_file", {}, "allow", ()),
        ("bob", [], "filesystem", "read_text_file", {"path": "/projects/secret/k"}, "deny", ("secret-folder",)),
        ("bob", [], "bank", "pay", {"amount": 50, "to": {"account": "SHOP-7"}}, "allow", ()),
        ("bob", [], "bank", "pay", {"amount": 5000, "to": {"account": "SHOP-7"}}, "ask", ("big-payments-ask",)),
        # deny wins over ask when both match
        ("bob", [], "bank", "pay", {"amount": 5000, "to": {"account": "ATTACKER-1"}}, "deny", ("payments-to-known",)),
        ("bob", [], "bank", "pay", {"amount": "5000"}, "allow", ()),  # a string is not in a numeric range
        ("bob", [], "mail", "send_mail", {"message": {"to": ["a@corp.internal.test"]}}, "ask", ("no-mail-otherwise",)),
        ("bob", [], "mail", "send_mail", {"message": {"to": []}}, "ask", ("no-mail-otherwise",)),
        ("ci-bot", [], "git", "git_commit", {}, "deny", ("bot-only",)),
        ("ci-bot", [], "time", "get_current_time", {}, "allow", ()),
    ],
)
def test_decision_table(
    engine: Engine, agent: str, groups: list[str], server: str, tool: str, args: dict[str, object], effect: str,
    rules: tuple[str, ...],
) -> None:  # fmt: skip
    d = engine.decide(agent, groups, server, tool, args)
    assert (d.effect, d.rules) == (effect, rules)


def test_reasons_and_explanations(engine: Engine) -> None:
    d = engine.decide("ann", ["interns"], "filesystem", "edit_file", {}, explain=True)
    assert d.reason == "interns may not write"
    assert "interns-read-only: matches, deny" in d.trace
    assert "secret-folder: skipped (tool not named)" in d.trace
    d = engine.decide("bob", [], "filesystem", "read_file", {"path": "/etc/x"}, explain=True)
    assert "secret-folder: skipped (condition not met: path regex '^/projects/secret/')" in d.trace
    assert d.trace[-1] == "no rule decided: the default, allow"


def test_rate_limit_per_agent_and_tool(engine: Engine) -> None:
    assert [engine.decide("a", [], "fetch", "fetch", {}, now=t).effect for t in (0, 1, 2)] == ["allow", "allow", "deny"]
    assert engine.decide("a", [], "fetch", "fetch", {}, now=3).rules == ("fetch-rate",)
    assert engine.decide("b", [], "fetch", "fetch", {}, now=3).effect == "allow"  # another agent's budget
    assert engine.decide("a", [], "fetch", "fetch", {}, now=61).effect == "allow"  # the window moved on
    assert engine.decide("a", [], "fetch", "fetch", {}, now=62, record=False).effect == "allow"


def test_the_rules_kept_per_caller_and_tool_decide_as_the_full_scan_does(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scopes are kept per (agent, groups, server, tool); explain mode scans every rule, kept scopes or not."""
    monkeypatch.setattr("bosun.policy.engine.SCOPES_CAP", 3)  # so the kept scopes are also dropped and rebuilt
    calls = [
        ("ann", ["interns"], "filesystem", "write_file", {}),
        ("ann", [], "filesystem", "write_file", {}),  # the same agent out of the group: another scope
        ("ci-bot", [], "git", "git_commit", {}),
        ("bob", [], "git", "git_commit", {}),
        ("bob", [], "bank", "pay", {"amount": 5000, "to": {"account": "ATTACKER-1"}}),
        ("bob", [], "bank", "pay", {"amount": 5000, "to": {"account": "SHOP-7"}}),
    ]
    for _ in range(2):
        for agent, groups, server, tool, args in calls:
            kept = engine.decide(agent, groups, server, tool, args)
            full = engine.decide(agent, groups, server, tool, args, explain=True)
            assert (kept.effect, kept.rules) == (full.effect, full.rules)
            assert len(engine._scopes) <= 3
    assert [engine.decide(*c).effect for c in calls] == ["deny", "allow", "deny", "allow", "deny", "ask"]


def test_tools_never_allowed_are_known_without_arguments(engine: Engine) -> None:
    assert engine.never_allowed("ann", ["interns"], "filesystem", "write_file")
    assert not engine.never_allowed("bob", [], "filesystem", "read_text_file")  # depends on its arguments
    assert engine.never_allowed("ci-bot", [], "git", "git_status")


def test_default_deny() -> None:
    engine = Engine(parse("default: deny\nrules: [{id: t, tools: [get_*]}]", "p"))
    assert engine.decide("x", [], "time", "get_current_time", {}).effect == "allow"
    assert engine.decide("x", [], "time", "convert_time", {}).effect == "deny"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [{id: r1, effect: maybe}]", "rule 'r1' (rules[0]): effect: Input should be 'allow', 'deny' or 'ask'"),
        ("rules: [{id: r1}, {id: r2, when: [{arg: x, regex: '('}]}]", "rule 'r2' (rules[1]): when[0].regex"),
        ("rules: [{id: r1, when: [{arg: x}]}]", "give exactly one of equals, regex, one_of, range, present"),
        ("rules: [{id: r1, when: [{arg: 'a..b', equals: 1}]}]", "is not an argument path"),
        ("rules: [{id: a}, {id: a}]", "two rules have the id 'a'"),
        ("rules: [{effect: deny}]", "rules[0]: id: Field required"),
        ("rules: [{id: r1, tool: [x]}]", "rule 'r1' (rules[0]): tool: Extra inputs are not permitted"),
        ("rules: [", "not valid YAML"),
    ],
)
def test_errors_name_the_rule(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse(text, "policy.yaml")
    assert message in str(e.value) and str(e.value).startswith("policy.yaml")


def test_the_audit_keeps_values_only_for_the_tools_the_policy_names() -> None:
    keep = "audit: {keep: [{tools: [bank__pay], arguments: true}, {tools: [pay], results: true}]}"
    engine = Engine(parse(keep, "p.yaml"))
    assert engine.kept("bank", "pay") == (True, True)
    assert engine.kept("shop", "pay") == (False, True)
    assert engine.kept("bank", "balance") == (False, False)
