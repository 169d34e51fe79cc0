"""The governance console in a real browser: Debian's Chromium, headless, driven by Playwright.

A platform engineer signs in, sees a server, watches a call appear live, approves a call that waits for a
person and sees it complete, and revokes an agent whose next call is then refused. A screenshot of each page
is kept in test-artifacts/console/."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _util import open_session, post
from conftest import HttpGateway, start_http_gateway
from playwright.sync_api import Browser, Page, expect, sync_playwright

from bosun.gateway.agents import Agents
from bosun.home import Home
from bosun.secrets.store import SecretStore

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
POLICY = """
ask_timeout_seconds: 60
rules:
  - id: graph-needs-a-person
    effect: ask
    servers: [memory]
    tools: [read_graph]
    reason: the knowledge graph holds what the team wrote down
  - id: an-accident
    effect: deny
    tools: [nothing__here]
    reason: "someone pasted the key here: PASTED_KEY"
"""
PASTED_KEY = "sk-live-0123456789abcdefghij"  # a stored secret that an operator pasted into the policy


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(str(CHROMIUM)) is None:
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    with sync_playwright() as p:
        # --no-sandbox: the tests may run as root, where Chromium's own sandbox refuses to start.
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def console(home: Home) -> Iterator[tuple[HttpGateway, str]]:
    """A gateway with the console, an ask rule, and an agent of our own (its token)."""
    agents = Agents.load(home.agents_file)
    token = agents.add("ci-bot", ["builders"])
    agents.save(home.agents_file)
    home.policy_file.write_text(POLICY.replace("PASTED_KEY", PASTED_KEY))
    SecretStore(home.root).set("payments-key", PASTED_KEY)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with start_http_gateway(home, "--console") as gw:
        yield gw, token


def call(gw: HttpGateway, token: str, tool: str, arguments: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    sid = open_session(gw, token)
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
    r = post(gw, token, body, **{"mcp-session-id": sid})
    return r.status_code, (r.json() if r.headers.get("content-type", "").startswith("application/json") else {})


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_a_platform_engineer_sees_and_steers_the_gateway(browser: Browser, console: tuple[HttpGateway, str]) -> None:
    gw, token = console
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)

    # Sign in: an unknown token is refused, the gateway token lets one in.
    page.goto(f"{gw.base}/console/")
    expect(page).to_have_url(f"{gw.base}/console/login")
    shot(page, "login")
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not the admin token")
    page.get_by_label("Admin token").fill(gw.token)
    page.get_by_role("button", name="Sign in").click()

    # Servers: the enabled ones, their verified images and SBOMs.
    expect(page).to_have_url(f"{gw.base}/console/overview")
    page.get_by_role("link", name="Servers").click()
    time_row = page.locator("#server-time")
    expect(time_row).to_contain_text("verified")
    expect(time_row).to_contain_text("enabled")
    shot(page, "servers")

    # Activity: a call made now appears at the top without a reload.
    page.get_by_role("link", name="Activity").click()
    expect(page.locator("#activity")).to_be_attached()
    page.wait_for_timeout(500)  # the event stream is open
    status, answer = call(gw, token, "time__get_current_time", {"timezone": "UTC"})
    assert status == 200 and not answer["result"].get("isError"), answer
    live = page.locator("#activity tr", has_text="get_current_time").first
    expect(live).to_contain_text("ci-bot")
    expect(live).to_contain_text("allow")
    shot(page, "activity")
    live.get_by_role("link").click()
    expect(page.locator("pre")).to_contain_text('"tool": "get_current_time"')
    shot(page, "record")

    # Servers again: the time server's container is running now; stopped here, it is gone.
    page.get_by_role("link", name="Servers").click()
    expect(time_row).to_contain_text("MiB")
    shot(page, "servers-running")
    page.get_by_role("button", name="Stop time's containers").click()
    expect(page.get_by_role("status")).to_contain_text("stopped 1 container(s) of time")
    expect(time_row).to_contain_text("idle")
    page.get_by_role("button", name="Start time").click()  # ahead of the next call
    expect(page.get_by_role("status")).to_contain_text("started time")
    expect(time_row).to_contain_text("MiB")

    # Overview: the call is in the chart and in the latency table; Sessions: its session, no leg touched.
    page.get_by_role("link", name="Overview").click()
    expect(page.locator("#calls-desc")).to_contain_text("1 calls allowed")
    expect(page.locator("#overview tbody")).to_contain_text("time")
    shot(page, "overview")
    page.get_by_role("link", name="Sessions").click()
    expect(page.locator("#sessions tbody tr").first).to_contain_text("ci-bot")
    shot(page, "sessions")

    # Policy: what would happen if ci-bot read the graph? The rule says ask.
    page.get_by_role("link", name="Policy").click()
    expect(page.get_by_role("status")).to_contain_text("validates")
    page.get_by_label("Agent").fill("ci-bot")
    page.get_by_label("Tool").fill("memory__read_graph")
    page.get_by_role("button", name="Check").click()
    expect(page.locator("#decision")).to_contain_text("ask by graph-needs-a-person")
    assert PASTED_KEY not in page.content() and "[REDACTED:payments-key]" in page.content()  # never rendered
    shot(page, "policy")

    # Approvals: a call the policy asks about waits; approved here, it completes.
    outcome: dict[str, Any] = {}
    waiting = threading.Thread(target=lambda: outcome.update(r=call(gw, token, "memory__read_graph", {})))
    waiting.start()
    page.get_by_role("link", name="Approvals").click()
    ask = page.locator("article.ask", has_text="read_graph")
    expect(ask).to_contain_text("ci-bot wants memory")
    shot(page, "approvals")
    ask.get_by_role("button", name="Approve").click()
    waiting.join(60)
    status, answer = outcome["r"]
    assert status == 200 and not answer["result"].get("isError"), answer
    expect(page.get_by_text("No call is waiting for a decision.")).to_be_visible()

    # Agents: revoked here, its next call is refused.
    page.get_by_role("link", name="Agents").click()
    expect(page.locator("#agent-ci-bot")).to_contain_text("builders")
    page.get_by_role("button", name="Revoke ci-bot").click()
    expect(page.locator("#agent-ci-bot")).to_contain_text("revoked")
    shot(page, "agents")
    refused = post(gw, token, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert refused.status_code == 401

    # Audit: the chain verifies, and the console's own actions are in it.
    page.get_by_role("link", name="Audit").click()
    page.get_by_role("button", name="Verify the chain").click()
    expect(page.get_by_role("status")).to_contain_text("the chain is intact")
    shot(page, "audit")

    # A phone's width: the same page, navigable.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    small = phone.new_page()
    small.goto(f"{gw.base}/console/login")
    small.get_by_label("Admin token").fill(gw.token)
    small.get_by_role("button", name="Sign in").click()
    expect(small.get_by_role("link", name="Servers")).to_be_visible()
    shot(small, "servers-phone")
    phone.close()
    context.close()


def test_changes_need_a_session_and_its_csrf_token(console: tuple[HttpGateway, str]) -> None:
    gw, _token = console
    anonymous = httpx.post(f"{gw.base}/console/agents/ci-bot/revoke", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/console/login"
    with httpx.Client(base_url=gw.base) as browser_like:
        form = browser_like.get("/console/login")
        pre = browser_like.cookies.get("bosun_console_login")
        assert pre and f'value="{pre}"' in form.text
        # httpx does not send Secure cookies over http; a browser on loopback does. Hand them over as one would.
        wrong = browser_like.post("/console/login", data={"pre": "other", "token": gw.token},
                                  headers={"Cookie": f"bosun_console_login={pre}"})  # fmt: skip
        assert wrong.status_code == 403  # a login form from elsewhere
        signed = browser_like.post("/console/login", data={"pre": pre, "token": gw.token},
                                   headers={"Cookie": f"bosun_console_login={pre}"})  # fmt: skip
        assert signed.status_code == 303
        session = signed.cookies.get("bosun_console")
        forged = browser_like.post("/console/agents/ci-bot/revoke", data={"csrf": "guess"},
                                   headers={"Cookie": f"bosun_console={session}"})  # fmt: skip
        assert forged.status_code == 403
    assert Agents.load(gw.home.agents_file).get("ci-bot").revoked is None  # type: ignore[union-attr]
