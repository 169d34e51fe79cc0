"""Warm tool-call latency: the same echo call, direct to a server container and through Bosun.

Runs everything in one process tree and prints p50/p99 and Bosun's overhead over the direct
baseline measured in the same run. The load generator is raw JSON-RPC (one line out, one line
in), not the SDK client, whose own cost (3-5 ms a call) would hide the gateway's.

    .venv/bin/python bench/warm_call.py [--calls 300]

Needs the engine and the base images; builds `everything` into a scratch home (cached layers).
Every reply is checked: a refused or failed call stops the run instead of being timed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx

from bosun.catalog.loader import load_catalog
from bosun.config import Settings
from bosun.home import Home
from bosun.images.build import build_entry
from bosun.images.lock import Lock
from bosun.runtime import engine

INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def call(i: int, name: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name, "arguments": {"message": "hi"}}}


class StdioPeer:
    """Newline-delimited JSON-RPC over a child's stdin/stdout; skips notifications."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0
        )
        assert self.proc.stdin and self.proc.stdout
        self._in: IO[bytes] = self.proc.stdin
        self._out: IO[bytes] = self.proc.stdout

    def send(self, msg: dict[str, Any]) -> None:
        self._in.write(json.dumps(msg).encode() + b"\n")

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.send(msg)
        while True:
            line = self._out.readline()
            if not line:
                raise RuntimeError("peer closed its stdout")
            reply: dict[str, Any] = json.loads(line)
            if reply.get("id") == msg["id"]:
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                return reply

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class HttpPeer:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.client = httpx.Client(
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}, timeout=60
        )
        self.session: str | None = None

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        headers = {"mcp-session-id": self.session} if self.session else {}
        r = self.client.post(self.url, json=msg, headers=headers)
        r.raise_for_status()
        self.session = r.headers.get("mcp-session-id", self.session)
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            for line in r.text.splitlines():
                if line.startswith("data:"):
                    reply: dict[str, Any] = json.loads(line[5:])
                    if reply.get("id") == msg["id"]:
                        return reply
            raise RuntimeError("no reply in the event stream")
        out: dict[str, Any] = r.json()
        return out

    def send(self, msg: dict[str, Any]) -> None:
        headers = {"mcp-session-id": self.session} if self.session else {}
        self.client.post(self.url, json=msg, headers=headers)


def measure(request: Callable[[dict[str, Any]], dict[str, Any]], tool: str, calls: int) -> list[float]:
    def echoed(msg: dict[str, Any]) -> None:
        result = request(msg)["result"]
        # A refusal is a fast answer too: timing one would flatter the gateway.
        if result.get("isError") or "hi" not in json.dumps(result.get("content")):
            raise RuntimeError(f"{tool} did not echo: {result}")

    for i in range(1, 31):  # warm-up: containers started, caches filled
        echoed(call(i, tool))
    out = []
    for i in range(100, 100 + calls):
        t0 = time.perf_counter()
        echoed(call(i, tool))
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pct(samples: list[float], p: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(len(samples) * p))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bosun-bench-"))
    home = Home(work).ensure()
    print("building everything into a scratch home (layers cached after the first run) ...", flush=True)
    # A whole home (image, signatures, keys), so the gateway starts what it verifies, as in real use.
    build_entry(engine.client(), load_catalog().get("everything"), home, lambda _m: None)
    locked = Lock.load(home.lock_file).images["everything"]
    Settings.model_validate({"servers": {"everything": {}}}).save(home.config_file)
    env = {**os.environ, "BOSUN_HOME": str(home.root)}
    bosun = [sys.executable, "-m", "bosun"]
    results: dict[str, list[float]] = {}

    direct = StdioPeer(
        ["docker", "run", "-i", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
         "--security-opt", "no-new-privileges:true", "--user", "10001:10001", "--log-driver", "none",
         locked.image_id, "stdio"]
    )  # fmt: skip
    direct.request(INIT)
    direct.send(INITIALIZED)
    results["direct to the container (raw stdio)"] = measure(direct.request, "echo", args.calls)
    direct.close()

    gw = StdioPeer([*bosun, "gateway", "run", "--transport", "stdio", "--log-level", "warning"], env=env)
    gw.request(INIT)
    gw.send(INITIALIZED)
    results["Bosun gateway, stdio (raw)"] = measure(gw.request, "everything__echo", args.calls)
    gw.close()

    port = free_port()
    http = subprocess.Popen(
        [*bosun, "gateway", "run", "--transport", "http", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        peer = HttpPeer(f"http://127.0.0.1:{port}/mcp", home.gateway_token()[0])
        peer.request(INIT)
        peer.send(INITIALIZED)
        results["Bosun gateway, streamable HTTP (raw)"] = measure(peer.request, "everything__echo", args.calls)
    finally:
        http.terminate()
        http.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(results["direct to the container (raw stdio)"])
    print(f"\nwarm echo call, {args.calls} sequential calls each, milliseconds\n")
    print(f"{'path':40} {'p50':>8} {'p99':>8} {'overhead p50':>14}")
    for name, samples in results.items():
        p50 = statistics.median(samples)
        print(f"{name:40} {p50:8.2f} {pct(samples, 0.99):8.2f} {p50 - base:+14.2f}")


if __name__ == "__main__":
    main()
