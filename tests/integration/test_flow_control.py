"""Flow control, screening and redaction on the real engine, through the office fixture server in its
own hardened container: legitimate sessions run to their end, injected ones are stopped at the
harmful call with the values and earlier calls named, and every decision is in the audit."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import docker
import mcp.types as types
import pytest
from _util import audit_log, run_bosun
from fixtures.office import scenarios
from fixtures.office.scenarios import SCENARIOS, install, run

from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.policy.asks import Asks
from bosun.runtime.docker import DockerBackend

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def office_home(built_home: Home, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Home:
    home = Home(tmp_path_factory.mktemp("office") / "home")
    shutil.copytree(built_home.root, home.root)
    install(home.ensure(), docker_client)
    return home


@pytest.fixture
def office(office_home: Home, tmp_path: Path) -> Home:
    home = Home(tmp_path / "home")
    shutil.copytree(office_home.root, home.root)
    return home.ensure()


def by_name(name: str) -> scenarios.Scenario:
    return next(s for s in SCENARIOS if s.name == name)


async def test_legitimate_sessions_pass_and_injected_ones_stop_at_the_harmful_call(office: Home) -> None:
    async with Gateway(office, DockerBackend()) as gw:
        outcomes = [await run(gw, s, f"session-{i}") for i, s in enumerate(SCENARIOS)]
    wrong = [o.scenario.name for o in outcomes if not o.correct]
    # The one miss is the one the table declares: a URL spelled out in words, carrying nothing private.
    assert wrong == ["spelled-out-url-no-data"], wrong

    attacker = next(o for o in outcomes if o.scenario.name == "forward-forecast-to-attacker")
    assert attacker.refused_at == 2
    refusal = attacker.texts[2]
    assert "denied by policy (flow:untrusted-destination)" in refusal and "to='eve@evil.example'" in refusal
    assert "call 1 office__read_email, audit #" in refusal
    hidden = next(o for o in outcomes if o.scenario.name == "obfuscated-address")
    assert "flow:private-payload" in hidden.texts[-1] and "'Q3 forecast revenue 12 5 million'" in hidden.texts[-1]
    assert "call 2 office__read_file" in hidden.texts[-1]

    records = [r for r in audit_log(office).records() if r.kind == "tools/call"]
    denied = [r for r in records if r.decision == "deny"]
    assert len(denied) == sum(1 for o in outcomes if o.refused_at is not None)
    assert all(any(rule.startswith("flow:") for rule in r.detail["rules"]) for r in denied)
    session = f"session-{SCENARIOS.index(attacker.scenario)}"
    read = next(r for r in records if r.session == session and r.tool == "read_email")
    assert f"audit #{read.seq}" in refusal  # the refusal points at the very record of the earlier call


async def test_injected_results_are_delimited_for_the_model_and_audited(office: Home) -> None:
    async with Gateway(office, DockerBackend()) as gw:
        result = await gw.call_tool("s", "office__read_email", {"id": "invoice-injected"})
        clean = await gw.call_tool("s", "office__read_email", {"id": "lunch"})
    notice, body = (b.text for b in result.content if isinstance(b, types.TextContent))
    assert "looks like it contains instructions" in notice and "hidden instructions: '<IMPORTANT>'" in notice
    assert body.startswith("<untrusted-data ") and "eve@evil.example" in body
    assert len(clean.content) == 1  # nothing found, nothing added
    screened = audit_log(office).records()[-2]
    assert screened.detail["screening"]["action"] == "annotate"
    assert {"rule": "hidden instructions", "span": "<IMPORTANT>"} in screened.detail["screening"]["findings"]


async def test_strict_mode_and_withholding(office: Home) -> None:
    office.policy_file.write_text(
        scenarios.POLICY.replace("flow:\n", "flow:\n  mode: strict\n") + "screening: {injection: withhold}\n"
    )
    async with Gateway(office, DockerBackend()) as gw:
        withheld = await gw.call_tool("s", "office__read_email", {"id": "invoice-injected"})
        assert withheld.is_error and "was withheld: it looks like a prompt injection" in withheld.content[0].text  # type: ignore[union-attr]
        assert "eve@evil.example" not in withheld.content[0].text  # type: ignore[union-attr]
        # The legitimate reply of the values mode is refused in strict mode: private and untrusted were both read.
        outcome = await run(gw, by_name("send-contract-to-partner"), "strict")
    assert outcome.refused_at == 2 and "flow:strict" in outcome.texts[2]
    assert "private data (call 1 office__read_email" in outcome.texts[2]


async def test_a_trip_can_ask_a_person_instead(office: Home) -> None:
    office.policy_file.write_text(
        scenarios.POLICY.replace("flow:\n", "flow:\n  on_violation: ask\n") + "ask_timeout_seconds: 30\n"
    )
    asks = Asks(office.asks_dir)

    async def approve() -> None:
        with anyio.fail_after(30):
            while not asks.pending():
                await anyio.sleep(0.1)
        pending = asks.pending()[0]
        assert pending["tool"] == "pay" and "comes from untrusted content" in pending["reason"]
        await anyio.to_thread.run_sync(lambda: run_bosun(office, "approve", pending["id"]))

    async with Gateway(office, DockerBackend()) as gw, anyio.create_task_group() as tg:
        tg.start_soon(approve)
        outcome = await run(gw, by_name("pay-attacker-account"), "asked")
    assert outcome.refused_at is None and outcome.texts[-1] == "paid 250.00 to DE88 1001 0010 0987 6543 21"


async def test_credentials_are_redacted_in_arguments_and_results(office: Home) -> None:
    office.policy_file.write_text(
        scenarios.POLICY + "audit: {keep: [{tools: [send_email], arguments: true, results: true}]}\n"
    )
    key = "AKIA" + "Q" * 16
    async with Gateway(office, DockerBackend()) as gw:
        sent = await gw.call_tool("s", "office__send_email", {"to": "alice@acme.example", "subject": key, "body": "x"})
        await gw.call_tool("s", "office__read_email", {"id": "lunch"})
    assert sent.content[0].text == "sent '[REDACTED:aws-access-key-id]' to alice@acme.example"  # type: ignore[union-attr]
    kept, shapes_only = audit_log(office).records()[-2:]
    assert kept.detail["redacted_args"] == ["aws-access-key-id"]
    # The policy keeps this tool's values, and they are kept redacted; other tools keep shapes only.
    assert '"subject": "[REDACTED:aws-access-key-id]"' in kept.detail["arguments"]
    assert kept.detail["result"]["text"].startswith("sent '[REDACTED:aws-access-key-id]' to alice@acme.example")
    assert "arguments" not in shapes_only.detail and "text" not in shapes_only.detail["result"]
    assert key not in office.audit_db.read_bytes().decode(errors="replace")


async def test_resources_and_prompts_are_redacted_and_a_resource_is_screened_and_remembered(office: Home) -> None:
    async with Gateway(office, DockerBackend()) as gw:
        note = await gw.read_resource("r", "office://notes/shared")
        refused = await gw.call_tool(
            "r", "office__send_email", {"to": "notes@evil.example", "subject": "n", "body": "x"}
        )
        prompt = await gw.get_prompt("r", "office__triage", None)
    text = note.contents[0].text  # type: ignore[union-attr]
    assert "AKIA" not in text and "Deploy key for staging: [REDACTED:aws-access-key-id]." in text
    assert text.startswith("[bosun] The result of office://notes/shared looks like it contains instructions")
    assert "<untrusted-data " in text
    # What the resource said is remembered like a tool's result: its address is no destination.
    assert refused.is_error and "call 1 office resource office://notes/shared, audit #" in refused.content[0].text  # type: ignore[union-attr]
    said = prompt.messages[0].content.text  # type: ignore[union-attr]
    assert "ghp_" not in said and "Use the token [REDACTED:github-token] for the tracker." in said
    read, _, got = audit_log(office).records()[-3:]
    assert read.kind == "resources/read" and read.detail["redacted"] == ["aws-access-key-id"]
    assert read.detail["screening"]["action"] == "annotate"
    assert got.kind == "prompts/get" and got.detail["redacted"] == ["github-token"]
