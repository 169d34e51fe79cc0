"""Helpers the integration tests share: the real ``bosun`` command, catalog overrides, exec in containers."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import docker
import httpx
import yaml

from bosun.audit.journal import settle
from bosun.audit.log import AuditLog
from bosun.catalog.loader import load_catalog
from bosun.config import ServerSettings, Settings
from bosun.home import Home

if TYPE_CHECKING:
    from conftest import HttpGateway

HELLO = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


def audit_log(home: Home) -> AuditLog:
    """The audit as a reader sees it (as `bosun audit` does): once every call answered so far is chained."""
    log = AuditLog(home.audit_db)
    assert settle(log), "a gateway's journal was not chained within 5 s"
    return log


def bosun_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bosun", *args]


def env_for(home: Home) -> dict[str, str]:
    return {**os.environ, "BOSUN_HOME": str(home.root)}


def run_bosun(home: Home, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bosun_cmd(*args), env=env_for(home), capture_output=True, text=True, check=check, timeout=300)


def override_entry(home: Home, name: str, **fields: Any) -> None:
    """A user catalog entry: the built-in ``name`` with ``fields`` replaced (same image), enabled."""
    data = load_catalog().get(name).model_dump(mode="json") | fields
    (home.root / "catalog").mkdir(exist_ok=True)
    (home.root / "catalog" / f"{name}.yaml").write_text(yaml.safe_dump(data))
    settings = Settings.load(home.config_file)
    settings.servers[name] = settings.servers.get(name) or ServerSettings()
    settings.servers[name].enabled = True
    settings.save(home.config_file)


def exec_in(client: docker.DockerClient, container_id: str, *argv: str, timeout_s: int = 60) -> tuple[int, str]:
    """Run ``argv`` inside the container as its server runs; returns (exit code, stdout+stderr)."""
    run = client.api.exec_create(container_id, ["timeout", str(timeout_s), *argv])
    out = client.api.exec_start(run).decode(errors="replace")
    return int(client.api.exec_inspect(run["Id"])["ExitCode"]), out


def sh(client: docker.DockerClient, container_id: str, script: str) -> str:
    return exec_in(client, container_id, "sh", "-c", script)[1]


def py(client: docker.DockerClient, container_id: str, code: str) -> tuple[int, str]:
    return exec_in(client, container_id, "python3", "-c", code)


def post(gw: HttpGateway, token: str, body: dict[str, object], **headers: str) -> httpx.Response:
    """One raw JSON-RPC message to the HTTP gateway, as ``token``'s agent."""
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


# Run inside a container to try every way out: by proxy, around it, raw TCP, DNS.
PROBE = """
import socket, urllib.request, urllib.error
def get(url, proxy=True):
    opener = urllib.request.build_opener() if proxy else urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        return opener.open(url, timeout=5).read().decode()
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"
    except OSError as e:
        return f"FAILED {type(e).__name__}"
def tcp(host, port):
    try:
        socket.create_connection((host, port), timeout=3)
        return "CONNECTED"
    except OSError as e:
        return f"FAILED {type(e).__name__}"
def dns(name):
    try:
        return str(socket.getaddrinfo(name, 80)[0][4])
    except OSError:
        return "NO-DNS"
"""
