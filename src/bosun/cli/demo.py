"""``bosun demo``: the whole path once, as a new user would see it.

Builds what is missing, enables three catalog servers, starts a real HTTP gateway process,
calls tools through the official MCP client, and shows which container served each call.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import anyio
import httpx
from rich.table import Table

from bosun.catalog import sources
from bosun.cli.output import console, fail, progress_printer
from bosun.client import http_client
from bosun.config import MountGrant, Settings
from bosun.home import Home
from bosun.images.build import build_entry
from bosun.runtime import engine
from bosun.runtime.backend import LABEL_GATEWAY
from bosun.runtime.docker import DockerBackend

DEMO_SERVERS = ("time", "memory", "filesystem")

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("time__get_current_time", {"timezone": "UTC"}),
    ("time__convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}),
    (
        "memory__create_entities",
        {"entities": [{"name": "Bosun", "entityType": "project", "observations": ["runs MCP servers in containers"]}]},
    ),
    ("memory__search_nodes", {"query": "Bosun"}),
    ("filesystem__list_directory", {"path": "/projects"}),
    ("filesystem__read_text_file", {"path": "/projects/welcome.txt"}),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare(home: Home) -> None:
    step = progress_printer("  ")
    console.rule("1. engine and images")
    try:
        engine.ensure_engine(home.log_dir, step)
    except engine.EngineError as e:
        fail(str(e))
    client = engine.client()
    catalog = sources.load(home.root)
    for name in DEMO_SERVERS:
        t0 = time.monotonic()
        r = build_entry(client, catalog.get(name), home, step)
        console.print(f"{'built' if r.rebuilt else 'reused'} {r.tag} in {time.monotonic() - t0:.1f}s")

    console.rule("2. servers")
    files = home.root / "demo-files"
    files.mkdir(exist_ok=True)
    (files / "welcome.txt").write_text(
        "Hello from the host. This folder is mounted read-only into the filesystem server.\n"
    )
    settings = Settings.load(home.config_file)
    for name in DEMO_SERVERS:
        grants = [MountGrant(source=files, target="/projects", read_only=True)] if name == "filesystem" else []
        settings.enable(catalog.get(name), grants)
    settings.save(home.config_file)
    console.print(f"enabled {', '.join(DEMO_SERVERS)}; filesystem sees {files} read-only at /projects")


async def _calls(url: str, token: str, gateway_id: str) -> None:
    backend = DockerBackend()
    async with http_client(url, token) as client:
        tools = (await client.list_tools()).tools
        console.print(f"{len(tools)} tools through the gateway: {', '.join(t.name for t in tools)}")
        containers = {c.server: c for c in await backend.list({LABEL_GATEWAY: gateway_id})}
        out = Table("tool", "ms", "container", "result", show_lines=True)
        for name, args in CALLS:
            t0 = time.perf_counter()
            result = await client.call_tool(name, args)
            ms = (time.perf_counter() - t0) * 1000
            text = " ".join(" ".join(getattr(c, "text", f"<{c.type}>").split()) for c in result.content)
            server = name.split("__")[0]
            c = containers.get(server)
            where = f"{c.name}\n{c.id[:12]}" if c else "?"
            out.add_row(name, f"{ms:.1f}", where, ("ERROR: " if result.is_error else "") + text[:300])
        console.print(out)


def run_demo(home: Home) -> None:
    _prepare(home)
    console.rule("3. gateway and calls")
    port = _free_port()
    token, _ = home.gateway_token()
    log_path = home.log_dir / "demo-gateway.log"
    cmd = [sys.executable, "-m", "bosun", "gateway", "run", "--transport", "http", "--port", str(port)]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, "BOSUN_HOME": str(home.root)})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        health: dict[str, Any] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"{base}/healthz", timeout=1).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        if not health:
            fail(f"the gateway did not come up; see {log_path}")
        console.print(f"gateway pid {proc.pid} at {base}/mcp (log: {log_path})")
        t0 = time.monotonic()
        anyio.run(_calls, f"{base}/mcp", token, health["gateway"])
        console.print(
            f"calls done in {time.monotonic() - t0:.1f}s (the first call to each server starts its container)"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    left = anyio.run(DockerBackend().list)
    console.rule("4. cleanup")
    console.print(f"gateway stopped; Bosun containers left running: {len(left)}")
    console.print("Next: `bosun gateway run --transport http --console`, point your agent at "
                  "http://127.0.0.1:8811/mcp, and watch it at http://127.0.0.1:8811/console/")  # fmt: skip
