"""The ``bosun`` command as a user runs it."""

from __future__ import annotations

import json

import pytest
from _util import run_bosun
from conftest import HttpGateway

from bosun.home import Home


def test_catalog_ls_json_lists_built_and_enabled(home: Home) -> None:
    rows = {r["name"]: r for r in json.loads(run_bosun(home, "catalog", "ls", "--json").stdout)}
    assert rows["time"]["built"] == "yes" and rows["time"]["enabled"] == "yes"
    assert rows["git"]["enabled"] == "no"
    assert rows["memory"]["package"] == "npm:@modelcontextprotocol/server-memory@2026.8.31"  # as --package writes it
    assert rows["memory"]["from"] == "builtin"


def test_catalog_build_skips_unchanged_entries(home: Home) -> None:
    out = run_bosun(home, "catalog", "build", "time").stdout
    assert out.startswith("up to date  bosun/mcp-time:")


def test_unknown_entry_is_a_clear_error(home: Home) -> None:
    r = run_bosun(home, "catalog", "build", "nosuch", check=False)
    assert r.returncode == 1
    assert "not in the catalog: nosuch" in r.stderr


def test_tools_call_in_process_gateway_cleans_up(home: Home) -> None:
    r = run_bosun(home, "tools", "call", "time__get_current_time", "--json", '{"timezone": "UTC"}')
    assert "via in-process gateway" in r.stderr
    assert json.loads(r.stdout)["structuredContent"]["timezone"] == "UTC"
    assert json.loads(run_bosun(home, "ps", "--json").stdout) == []


@pytest.mark.parametrize(("args", "message"), [("{", "not valid JSON"), ("[1]", "must be a JSON object")])
def test_tools_call_rejects_bad_arguments(home: Home, args: str, message: str) -> None:
    r = run_bosun(home, "tools", "call", "time__get_current_time", "--json", args, check=False)
    assert r.returncode == 1 and message in r.stderr


def test_tools_go_through_a_running_gateway(http_gateway: HttpGateway) -> None:
    r = run_bosun(http_gateway.home, "tools", "ls", "--json")
    assert f"via gateway at {http_gateway.url}" in r.stderr
    assert "time__get_current_time" in {t["name"] for t in json.loads(r.stdout)}
    ps = json.loads(run_bosun(http_gateway.home, "ps", "--json").stdout)
    assert {"time", "memory", "filesystem"} <= {c["server"] for c in ps}


def test_server_enable_refuses_missing_host_path(home: Home) -> None:
    r = run_bosun(home, "server", "enable", "filesystem", "--mount", "/does/not/exist:/projects", check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_doctor_reports_ok(home: Home) -> None:
    r = run_bosun(home, "doctor", "--json", check=False)
    checks = {c["check"]: c for c in json.loads(r.stdout)}
    assert checks["engine"]["status"] == "ok"
    assert checks["server time"]["status"] == "ok"
    # A hardened container echoed a line through its stdio FIFOs, and left nothing behind.
    assert checks["server stdio"]["status"] == "ok" and "FIFOs" in checks["server stdio"]["detail"]
    assert not any(home.stdio_dir.iterdir())
