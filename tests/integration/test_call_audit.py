"""The call audit on the real engine: every request and decision recorded, values never kept,
and an altered record named by `bosun audit verify`."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import threading
import time

import httpx
import pytest
from _util import audit_log, run_bosun
from conftest import HttpGateway
from mcp.shared.exceptions import MCPError

from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.images.lock import Lock
from bosun.runtime.docker import DockerBackend

pytestmark = pytest.mark.anyio


async def test_requests_are_audited_without_values_and_verify(home: Home, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bosun.gateway")
    async with Gateway(home, DockerBackend()) as gw:
        await gw.list_tools("c1")
        await gw.call_tool("c1", "time__get_current_time", {"timezone": "Pacific/Auckland"})
        with pytest.raises(MCPError):
            await gw.call_tool("c1", "time__no_such_tool", {})
    anchor = run_bosun(home, "audit", "anchor").stdout.strip()
    assert any(r.getMessage() == f"audit head {anchor}" for r in caplog.records)  # logged on the way out
    out = run_bosun(home, "audit", "tail", "--json", "-n", "50").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["kind"] for r in rows] == ["tools/list", "tools/call", "tools/call"]
    listed, ok, refused = rows
    assert listed["detail"]["count"] >= 2 and listed["session"] == "c1"
    assert (ok["server"], ok["tool"], ok["decision"], ok["outcome"]) == ("time", "get_current_time", "allow", "ok")
    assert ok["image"] == Lock.load(home.lock_file).images["time"].image_id
    assert ok["detail"]["args"] == {"timezone": "str:16"} and ok["duration_ms"] > 0
    assert (refused["outcome"], refused["tool"]) == ("refused", "no_such_tool") and "unknown tool" in refused["reason"]
    assert "Auckland" not in out  # arguments are kept as shape only
    assert [r["prev"] for r in rows[1:]] == [r["hash"] for r in rows[:-1]]

    assert "3 records, chain intact" in run_bosun(home, "audit", "verify").stdout
    exported = run_bosun(home, "audit", "export", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["hash"] for line in exported] == [r["hash"] for r in rows]

    assert "chain intact" in run_bosun(home, "audit", "verify", "--anchor", anchor).stdout
    db = sqlite3.connect(home.audit_db)
    db.executescript("DROP TRIGGER records_no_update; UPDATE records SET tool = 'harmless' WHERE seq = 2;")
    db.close()
    bad = run_bosun(home, "audit", "verify", check=False)
    assert bad.returncode == 1 and "record 2: its content does not match its hash" in bad.stderr

    # Cutting the newest record off leaves a shorter chain that verifies by itself; the anchor catches it.
    db = sqlite3.connect(home.audit_db)
    db.executescript("DROP TRIGGER records_no_delete; DELETE FROM records WHERE seq = 3;")
    db.close()
    cut = run_bosun(home, "audit", "verify", "--anchor", anchor, check=False)
    assert cut.returncode == 1 and "record 3: anchored, but gone: the audit was truncated or replaced" in cut.stderr


def _session(gw: HttpGateway) -> tuple[httpx.Client, dict[str, str]]:
    auth = {"Authorization": f"Bearer {gw.token}", "Accept": "application/json, text/event-stream"}
    client = httpx.Client(timeout=30, headers=auth)
    hello = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "load", "version": "1"}}
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello}
    r = client.post(gw.url, json=init)
    r.raise_for_status()
    headers = {"mcp-session-id": r.headers["mcp-session-id"]}
    client.post(gw.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    return client, headers


def _load(gw: HttpGateway, acked: list[int], stop: threading.Event) -> None:
    client, headers = _session(gw)
    i = 1
    while not stop.is_set():
        call = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                "params": {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}}  # fmt: skip
        try:
            r = client.post(gw.url, json=call, headers=headers)
        except httpx.HTTPError:
            return  # the gateway is gone: this call was never answered
        if r.status_code == 200 and '"isError":false' in r.text.replace(" ", ""):
            acked.append(i)  # answered, so it must be in the audit
        i += 1


def test_kill_9_under_load_loses_no_answered_call(http_gateway: HttpGateway) -> None:
    acked: list[int] = []
    stop = threading.Event()
    workers = [threading.Thread(target=_load, args=(http_gateway, acked, stop)) for _ in range(4)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 60
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(http_gateway.proc.pid, signal.SIGKILL)  # mid-load, no chance to flush or close anything
    stop.set()
    for w in workers:
        w.join(timeout=30)
    assert len(acked) >= 200
    log = audit_log(http_gateway.home)  # the killed gateway's journal is chained now, whole
    _, problems = log.verify()
    assert problems == [] and not list(log.journal_dir.glob("*.jsonl"))
    answered = [r for r in log.records() if r.kind == "tools/call" and r.outcome == "ok"]
    assert len(answered) >= len(acked), (len(answered), len(acked))
