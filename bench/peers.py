"""Bosun against the direct path and a peer gateway: one echo server, the same load, in one run.

Paths: direct to the server container (raw JSON-RPC over stdio, and the official SDK client), Bosun's
gateway over stdio and over streamable HTTP (reaching the server through its stdio FIFOs, and again
through the engine's attach stream, ``stdio: attach``, as a baseline), and two peers in front of the
same container, each installed from PyPI into its own virtual environment under .cache/bench:
`mcp-proxy`, and IBM's ContextForge (stateful sessions, rate limiting off; its stdio bridge
registered as a virtual server). The direct path and the peers reach the container as a user would,
through `docker run -i` (the CLI and the engine relay its stdio).
The echo server is the `everything` image; every path runs it with the same hardening.

Figures: p50/p99 of sequential calls; calls/s with 16 and 64 concurrent clients (each its own MCP
session over HTTP, or requests in flight on the one stdio connection); the load generator's own
ceiling (the same generator against a canned reply), and the same reply behind the HTTP server
Bosun's gateway runs (uvicorn as the gateway configures it: the floor under Bosun's HTTP rows);
Bosun's cold first call (gateway up, container not yet started); the idle server container's memory
and the gateway's RSS. With 16 clients, the CPU time each call took: in the path's own processes
(the gateway and its children, such as the `docker run -i` a peer starts; the canned servers; the
direct path's `docker` CLI), and on the whole machine (every process, the generator and the echo
server included). The machine's CPU is
what the calls/s share: on two cores, a path that takes less CPU per call leaves more for the rest.
Bosun over HTTP and `mcp-proxy`, whose ratio is a target, are measured in alternating rounds
(``--rounds``), and their rows give every latency and the median rates and CPU of the rounds.

The generator is raw JSON-RPC (hand-written HTTP/1.1 on asyncio streams, asyncio pipes) in several
processes, not the SDK client, whose own cost (measured here too) would hide the gateways'. Every
reply is checked: a refusal or an error stops the run instead of being timed.

    .venv/bin/python bench/peers.py [--calls 300] [--seconds 5] [--rounds 3] [--no-contextforge]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.processes import free_port, started

from bosun.catalog.loader import load_catalog
from bosun.config import Settings
from bosun.home import Home
from bosun.images.build import build_entry
from bosun.images.lock import Lock
from bosun.runtime import engine

ROOT = Path(__file__).resolve().parents[1]
PROXY_VENV = ROOT / ".cache" / "bench" / "mcp-proxy-venv"
CONTEXTFORGE_VENV = ROOT / ".cache" / "bench" / "contextforge-venv"
HELLO = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
HARDENED = ["--network", "none", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt",
            "no-new-privileges:true", "--user", "10001:10001", "--log-driver", "none"]  # fmt: skip
Request = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def call(i: int, tool: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": tool, "arguments": {"message": "hi"}}}


def checked(reply: dict[str, Any]) -> None:
    result = reply.get("result") or {}
    if "error" in reply or result.get("isError") or "hi" not in json.dumps(result.get("content")):
        raise RuntimeError(f"not an echo: {json.dumps(reply)[:300]}")


# -- raw clients ---------------------------------------------------------------------------------


class Stdio:
    """Newline-delimited JSON-RPC to a child process; any number of requests in flight."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, argv: list[str], env: dict[str, str] | None = None) -> Stdio:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            limit=16 * 1024 * 1024,
        )  # fmt: skip
        peer = cls(proc)
        await peer.request({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": HELLO})
        await peer.notify({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return peer

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            future = self._waiting.pop(msg.get("id"), None) if "id" in msg else None
            if future is not None and not future.done():
                future.set_result(msg)
        for future in self._waiting.values():
            future.set_exception(RuntimeError("the peer closed its stdout"))

    async def notify(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        await self.proc.stdin.drain()

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        future = self._waiting[msg["id"]] = asyncio.get_running_loop().create_future()
        await self.notify(msg)
        return await future

    async def close(self) -> None:
        # End of input first, as a client leaving would: the child exits and its pipes close in this loop.
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await self._reader


class Http:
    """One MCP session over streamable HTTP on a keep-alive connection of its own.

    Requests are written as bytes and replies parsed by hand (Content-Length, chunked, or to the end),
    because httpx's own cost per request was most of what the generator could drive (about 1000/s).
    """

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = urlsplit(url)
        self._head = (f"POST {self.url.path or '/'} HTTP/1.1\r\nHost: {self.url.netloc}\r\n"
                      "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
                      + "".join(f"{k}: {v}\r\n" for k, v in headers.items()))  # fmt: skip
        self.session: str | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @classmethod
    async def start(cls, url: str, headers: dict[str, str]) -> Http:
        peer = cls(url, headers)
        await peer.request({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": HELLO})
        await peer.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return peer

    async def post(self, msg: dict[str, Any]) -> tuple[dict[str, str], bytes]:
        body = json.dumps(msg).encode()
        session = f"Mcp-Session-Id: {self.session}\r\n" if self.session else ""
        request = f"{self._head}{session}Content-Length: {len(body)}\r\n\r\n".encode() + body
        fresh = self.writer is None
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.url.hostname, self.url.port, limit=1 << 24)
        assert self.reader is not None
        self.writer.write(request)
        try:
            raw_head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            if fresh or (isinstance(e, asyncio.IncompleteReadError) and e.partial):
                raise
            # The server closed the kept-alive connection between requests (a keep-alive timeout): as any
            # HTTP client does, send the request again on a new one.
            await self.close()
            return await self.post(msg)
        head = raw_head.decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            chunks = []
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append((await self.reader.readexactly(size + 2))[:-2])
            await self.reader.readuntil(b"\r\n")
            data = b"".join(chunks)
        else:
            data = await self.reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            await self.close()
        if status >= 400:
            raise RuntimeError(f"HTTP {status}: {data[:300]!r}")
        self.session = headers.get("mcp-session-id", self.session)
        return headers, data

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        headers, data = await self.post(msg)
        if not headers.get("content-type", "").startswith("text/event-stream"):
            out: dict[str, Any] = json.loads(data)
            return out
        for line in data.decode().splitlines():
            if line.startswith("data:") and line[5:].strip():
                reply: dict[str, Any] = json.loads(line[5:])
                if reply.get("id") == msg["id"]:
                    return reply
        raise RuntimeError("no reply in the event stream")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


# -- measurements --------------------------------------------------------------------------------


async def sequential(request: Request, tool: str, calls: int) -> list[float]:
    for i in range(30):  # warm-up
        checked(await request(call(i, tool)))
    out = []
    for i in range(1000, 1000 + calls):
        t0 = time.perf_counter()
        checked(await request(call(i, tool)))
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def calls_in(requests: list[Request], tool: str, seconds: float) -> int:
    """How many calls the clients (one request function each, used one call at a time) complete in ``seconds``."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop(request: Request, n: int) -> None:
        nonlocal done
        i = n * 10_000_000
        while time.perf_counter() < deadline:
            i += 1
            checked(await request(call(i, tool)))
            done += 1

    await asyncio.gather(*(loop(r, n) for n, r in enumerate(requests)))
    return done


async def _http_worker(url: str, headers: dict[str, str], tool: str, sessions: int, seconds: float) -> int:
    peers = [await Http.start(url, headers) for _ in range(sessions)]
    try:
        # Blocking the loop is harmless here: the sessions are idle until every process is ready.
        _window.wait(timeout=WINDOW_WAIT_S)
        return await calls_in([p.request for p in peers], tool, seconds)
    finally:
        for peer in peers:
            await peer.close()


def _http_process(args: tuple[str, dict[str, str], str, int, float]) -> int:
    return asyncio.run(_http_worker(*args))


WINDOW_WAIT_S = 120  # for every client process to start, import this module and open its sessions
_window: Any = None  # a client process's share of the barrier that opens the timed window


def _join_window(window: Any) -> None:
    global _window
    _window = window


def http_throughput(url: str, headers: dict[str, str], tool: str, clients: int, seconds: float,
                    roots: list[int] | None = None) -> tuple[float, list[float]]:  # fmt: skip
    """Calls/s with ``clients`` concurrent sessions spread over a few processes, and the CPU seconds used
    meanwhile (``cpu_seconds`` of ``roots``). The processes start calling together once every one has its
    sessions open, so that neither figure counts their start-up."""
    processes = min(4, clients)
    share = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    spawn = multiprocessing.get_context("spawn")
    window = spawn.Barrier(processes + 1)
    with spawn.Pool(processes, initializer=_join_window, initargs=(window,)) as pool:
        counts = pool.map_async(_http_process, [(url, headers, tool, n, seconds) for n in share])
        try:
            window.wait(timeout=WINDOW_WAIT_S)
        except threading.BrokenBarrierError:
            counts.get(timeout=5)  # a client process's own error, when one failed before the window
            raise
        with cpu_seconds(roots or []) as cpu:
            time.sleep(seconds)
        return sum(counts.get()) / seconds, cpu


async def stdio_throughput(peer: Stdio, tool: str, clients: int, seconds: float) -> tuple[float, list[float]]:
    """Calls/s with ``clients`` requests in flight on the one connection, and the CPU seconds used meanwhile
    (``cpu_seconds`` of the peer's process)."""
    with cpu_seconds([peer.proc.pid]) as cpu:
        done = await calls_in([peer.request] * clients, tool, seconds)
    return done / seconds, cpu


# -- things under test ---------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def container_mb(label: str) -> float:
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label={label}"], capture_output=True, text=True).stdout
    if not ids.split():
        return 0.0
    raw = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", ids.split()[0]],
                         capture_output=True, text=True).stdout.split("/")[0].strip()  # fmt: skip
    number, unit = float(raw.rstrip("KMGiB")), raw.lstrip("0123456789.")
    return number * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}.get(unit, 1)


def _stat(pid: int) -> tuple[int, int]:
    """A process's parent and the CPU clock ticks it used so far (with the children it reaped); OSError once
    it is gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), sum(map(int, fields[11:15]))  # utime, stime, cutime, cstime


def process_ticks(pid: int) -> int:
    """CPU clock ticks one process used so far (0 once it is gone)."""
    with contextlib.suppress(OSError):
        return _stat(pid)[1]
    return 0


def _ticks(roots: list[int]) -> int:
    """CPU clock ticks used so far by ``roots`` and their live descendants (and the children they reaped)."""
    parents: dict[int, int] = {}
    used: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parents[int(entry.name)], used[int(entry.name)] = _stat(int(entry.name))
    tree, grew = set(roots), True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(used.get(pid, 0) for pid in tree)


def _machine_ticks() -> int:
    """Busy CPU clock ticks of the whole machine so far (everything but idle and I/O wait)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4]


@contextlib.contextmanager
def cpu_seconds(roots: list[int]) -> Iterator[list[float]]:
    """CPU seconds the block used: ``[by roots and their descendants, by the machine]``, filled in on exit."""
    hz = os.sysconf("SC_CLK_TCK")
    out: list[float] = []
    own, machine = _ticks(roots), _machine_ticks()
    yield out
    out += [(_ticks(roots) - own) / hz, (_machine_ticks() - machine) / hz]


def _canned_reply(msg: dict[str, Any]) -> bytes | None:
    """The canned servers' answer to a request (None for a notification): an echo result, made afresh."""
    if "id" not in msg:
        return None
    result = {"content": [{"type": "text", "text": "hi"}]}
    return json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}).encode()


async def canned_server(port: int) -> None:
    """The cheapest possible MCP-shaped HTTP reply (asyncio streams, no framework): the generator's ceiling."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                body = _canned_reply(json.loads(await reader.readexactly(length)))
                if body is None:
                    writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: canned\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def _canned_process(port: int) -> None:
    asyncio.run(canned_server(port))


async def _canned_app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                      send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:  # fmt: skip
    """The canned reply as an ASGI app, to be served as Bosun serves its own (``_uvicorn_canned_process``)."""
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = _canned_reply(json.loads(b"".join(chunks)))
    headers = [(b"content-type", b"application/json"), (b"mcp-session-id", b"canned"),
               (b"content-length", str(len(body or b"")).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": 202 if body is None else 200, "headers": headers})
    await send({"type": "http.response.body", "body": body or b""})


def _uvicorn_canned_process(port: int) -> None:
    """The canned reply behind the HTTP server Bosun's gateway runs (``http_config``: uvicorn, httptools, writes
    coalesced a loop turn): what a call over HTTP costs before the gateway does anything."""
    import uvicorn

    from bosun.gateway.transports import http_config

    uvicorn.Server(http_config(_canned_app, "127.0.0.1", port, lifespan="off")).run()


def canned_path(serve: Callable[[int], None], calls: int, seconds: float) -> Figures:
    """The figures of a canned server, ``serve(port)`` in a process of its own."""
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(port,), daemon=True)
    server.start()
    try:
        _accepting(port, server)
        return http_path(f"http://127.0.0.1:{port}/", {}, "echo", calls, seconds, [server.pid or 0])
    finally:
        server.terminate()


def _accepting(port: int, server: multiprocessing.process.BaseProcess, timeout_s: float = 60) -> None:
    """Return once ``server`` accepts connections on ``port``. A fixed wait of 2 s was once too short: a
    spawned process importing uvicorn and the gateway's transports on a busy machine."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if not server.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the canned server did not accept connections on port {port}") from None
            time.sleep(0.05)


def install_contextforge() -> Path:
    bin_dir = CONTEXTFORGE_VENV / "bin"
    if not (bin_dir / "mcpgateway").exists():
        print("installing ContextForge into its own virtual environment (a few minutes) ...", flush=True)
        subprocess.run(["python3", "-m", "venv", str(CONTEXTFORGE_VENV)], check=True)  # it pins mcp<2
        subprocess.run([str(bin_dir / "pip"), "install", "-q", "mcp-contextforge-gateway"], check=True)
    return bin_dir


@contextlib.contextmanager
def contextforge(
    direct: list[str],
) -> Iterator[tuple[str, dict[str, str], str, subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """ContextForge in front of the same container: its stdio bridge, the gateway (stateful sessions, no rate
    limit, which would answer 429 under load), the bridge registered and exposed as a virtual server."""
    bin_dir = install_contextforge()
    with tempfile.TemporaryDirectory(prefix="bosun-contextforge-") as tmp, contextlib.ExitStack() as procs:
        work = Path(tmp)
        subprocess.run([str(bin_dir / "python"), "-m", "mcpgateway.scripts.init_secrets", "--output", ".env.secrets",
                        "--force"], cwd=work, check=True, capture_output=True)  # fmt: skip
        settings = {"DATABASE_URL": "sqlite:///./mcp.db", "MCPGATEWAY_UI_ENABLED": "false",
                    "MCPGATEWAY_ADMIN_API_ENABLED": "true", "SSRF_ALLOW_LOCALHOST": "true",
                    "RATE_LIMITING_ENABLED": "false", "USE_STATEFUL_SESSIONS": "true"}  # fmt: skip
        for line in (work / ".env.secrets").read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                settings[key.strip()] = value.strip().strip('"')
        env = {**os.environ, **settings}
        bridge_port, port = free_port(), free_port()
        bridge_argv = [str(bin_dir / "python"), "-m", "mcpgateway.translate", "--stdio", shlex.join(direct),
                       "--expose-streamable-http", "--port", str(bridge_port)]  # fmt: skip
        gateway_argv = [str(bin_dir / "mcpgateway"), "--host", "127.0.0.1", "--port", str(port)]
        bridge = procs.enter_context(started(bridge_argv, f"http://127.0.0.1:{bridge_port}/", "ContextForge's bridge",
                                             env=env, cwd=work))  # fmt: skip
        gateway = procs.enter_context(started(gateway_argv, f"http://127.0.0.1:{port}/health", "ContextForge",
                                              env=env, cwd=work, timeout_s=120))  # fmt: skip
        token = subprocess.run(
            [str(bin_dir / "python"), "-m", "mcpgateway.utils.create_jwt_token", "--username", "admin@example.com",
             "--exp", "600", "--admin"], cwd=work, env=env, capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                           timeout=60)  # fmt: skip
        api.post("/gateways", json={"name": "echo", "url": f"http://127.0.0.1:{bridge_port}/mcp",
                                    "transport": "STREAMABLEHTTP"}).raise_for_status()  # fmt: skip
        listed = api.get("/tools").json()
        tools = listed if isinstance(listed, list) else listed.get("items", [])
        echo = next(t for t in tools if (t.get("originalName") or t.get("original_name")) == "echo")
        server = api.post("/servers", json={"server": {"name": "bench", "associated_tools": [echo["id"]]}})
        server.raise_for_status()
        url = f"http://127.0.0.1:{port}/servers/{server.json()['id']}/mcp"
        yield url, {"Authorization": f"Bearer {token}"}, echo["name"], gateway, bridge


def install_proxy() -> Path:
    exe = PROXY_VENV / "bin" / "mcp-proxy"
    if not exe.exists():
        print("installing mcp-proxy into its own virtual environment ...", flush=True)
        # Its own environment: it pins mcp<2, Bosun needs mcp 2.
        subprocess.run(["python3", "-m", "venv", str(PROXY_VENV)], check=True)
        subprocess.run([str(PROXY_VENV / "bin" / "pip"), "install", "-q", "mcp-proxy"], check=True)
    return exe


async def sdk_sequential(argv: list[str], calls: int) -> list[float]:
    """The official SDK client, straight to the container: what an SDK-built load generator would measure."""
    from mcp import Client, StdioServerParameters

    async with Client(StdioServerParameters(command=argv[0], args=argv[1:]), mode="legacy") as client:
        out = []
        for i in range(30 + calls):
            t0 = time.perf_counter()
            result = await client.call_tool("echo", {"message": "hi"})
            if result.is_error:
                raise RuntimeError(f"not an echo: {result}")
            if i >= 30:
                out.append((time.perf_counter() - t0) * 1000)
        return out


@dataclass
class Figures:
    """One path's figures."""

    latencies: list[float]  # ms, sequential calls
    rates: list[float] = field(default_factory=list)  # calls/s with 16 and with 64 clients
    cpu: list[float] = field(default_factory=list)  # us of CPU a call with 16 clients: the path's processes, machine

    @classmethod
    def of(cls, latencies: list[float], runs: list[tuple[float, list[float]]], seconds: float) -> Figures:
        """From the sequential latencies and the throughput runs (16 clients first)."""
        rate, cpu = runs[0]
        return cls(latencies, [r for r, _ in runs], [used / (rate * seconds) * 1e6 for used in cpu])

    @classmethod
    def merged(cls, rounds: list[Figures]) -> Figures:
        """Rounds of one path as one: every latency, and the median of each rate and CPU figure."""
        return cls(
            [ms for f in rounds for ms in f.latencies],
            [statistics.median(v) for v in zip(*(f.rates for f in rounds), strict=True)],
            [statistics.median(v) for v in zip(*(f.cpu for f in rounds), strict=True)],
        )


async def stdio_path(argv: list[str], env: dict[str, str] | None, tool: str, calls: int, seconds: float) -> Figures:
    peer = await Stdio.start(argv, env)
    try:
        latencies = await sequential(peer.request, tool, calls)
        runs = [await stdio_throughput(peer, tool, c, seconds) for c in (16, 64)]
    finally:
        await peer.close()
    return Figures.of(latencies, runs, seconds)


async def http_sequential(url: str, headers: dict[str, str], tool: str, calls: int) -> list[float]:
    peer = await Http.start(url, headers)
    try:
        return await sequential(peer.request, tool, calls)
    finally:
        await peer.close()


def http_path(url: str, headers: dict[str, str], tool: str, calls: int, seconds: float, roots: list[int]
              ) -> Figures:  # fmt: skip
    latencies = asyncio.run(http_sequential(url, headers, tool, calls))
    return Figures.of(latencies, [http_throughput(url, headers, tool, c, seconds, roots) for c in (16, 64)], seconds)


async def cold_first_call(argv: list[str], env: dict[str, str]) -> float:
    """Gateway up and initialized, no container yet: the first call starts one."""
    peer = await Stdio.start(argv, env)
    try:
        t0 = time.perf_counter()
        checked(await peer.request(call(1, "everything__echo")))
        return (time.perf_counter() - t0) * 1000
    finally:
        await peer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="sequential calls per path")
    parser.add_argument("--seconds", type=float, default=5, help="duration of each throughput run")
    parser.add_argument("--no-contextforge", action="store_true", help="leave out ContextForge (slow to set up)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of Bosun over HTTP and mcp-proxy")
    args = parser.parse_args()
    proxy = install_proxy()
    home = Home(Path(tempfile.mkdtemp(prefix="bosun-peers-"))).ensure()
    print("building everything into a scratch home (layers cached after the first run) ...", flush=True)
    build_entry(engine.client(), load_catalog().get("everything"), home, lambda _m: None)
    image = Lock.load(home.lock_file).images["everything"].image_id
    Settings.model_validate({"servers": {"everything": {}}}).save(home.config_file)
    env = {**os.environ, "BOSUN_HOME": str(home.root)}
    direct = ["docker", "run", "-i", "--rm", *HARDENED, image, "stdio"]
    gateway = [sys.executable, "-m", "bosun", "gateway", "run", "--log-level", "warning"]
    rows: dict[str, Figures] = {}
    extra: dict[str, str] = {}
    try:
        print("load generator ceiling ...", flush=True)
        rows["load generator alone (canned reply)"] = canned_path(_canned_process, args.calls, args.seconds)
        rows["Bosun's uvicorn (canned reply)"] = canned_path(_uvicorn_canned_process, args.calls, args.seconds)

        print("direct ...", flush=True)
        rows["direct, raw stdio"] = asyncio.run(stdio_path(direct, None, "echo", args.calls, args.seconds))
        rows["direct, official SDK client"] = Figures(asyncio.run(sdk_sequential(direct, args.calls)))

        print("Bosun over stdio ...", flush=True)
        colds = [asyncio.run(cold_first_call(gateway, env)) for _ in range(3)]
        extra["Bosun cold first call (container start), p50 of 3"] = f"{statistics.median(colds):.0f} ms"
        rows["Bosun, stdio"] = asyncio.run(stdio_path(gateway, env, "everything__echo", args.calls, args.seconds))

        print("Bosun over streamable HTTP, the engine's attach stream to the server ...", flush=True)
        Settings.model_validate({"servers": {"everything": {}}, "stdio": "attach"}).save(home.config_file)
        port = free_port()
        argv = [*gateway, "--transport", "http", "--port", str(port)]
        auth = {"Authorization": f"Bearer {home.gateway_token()[0]}"}
        with started(argv, f"http://127.0.0.1:{port}/healthz", "the gateway", env=env) as attached:
            attach = http_path(
                f"http://127.0.0.1:{port}/mcp", auth, "everything__echo", args.calls, args.seconds, [attached.pid]
            )
        Settings.model_validate({"servers": {"everything": {}}}).save(home.config_file)

        def bosun_http() -> Figures:
            port = free_port()
            argv = [*gateway, "--transport", "http", "--port", str(port)]
            with started(argv, f"http://127.0.0.1:{port}/healthz", "the gateway", env=env) as http:
                figures = http_path(f"http://127.0.0.1:{port}/mcp", auth, "everything__echo", args.calls,
                                    args.seconds, [http.pid])  # fmt: skip
                extra["Bosun gateway RSS after the load"] = f"{rss_mb(http.pid):.0f} MB"
                extra["idle everything container (docker stats)"] = (
                    f"{container_mb('io.bosun.server=everything'):.0f} MB"
                )
            return figures

        def mcp_proxy() -> Figures:
            port = free_port()
            argv = [str(proxy), "--host", "127.0.0.1", "--port", str(port), "--", *direct]
            with started(argv, f"http://127.0.0.1:{port}/mcp", "mcp-proxy") as peer:
                figures = http_path(f"http://127.0.0.1:{port}/mcp", {}, "echo", args.calls, args.seconds, [peer.pid])
                extra["mcp-proxy RSS after the load"] = f"{rss_mb(peer.pid):.0f} MB"
            return figures

        # The ratio to the target is measured in alternating rounds: the machine's speed drifts over a run.
        ours: list[Figures] = []
        theirs: list[Figures] = []
        for r in range(args.rounds):
            print(f"Bosun over streamable HTTP, then mcp-proxy (round {r + 1} of {args.rounds}) ...", flush=True)
            ours.append(bosun_http())
            theirs.append(mcp_proxy())
        rows["Bosun, streamable HTTP"] = Figures.merged(ours)
        rows["Bosun, streamable HTTP, stdio: attach"] = attach
        rows["mcp-proxy, streamable HTTP"] = Figures.merged(theirs)
        for i, clients in enumerate((16, 64)):
            each = ", ".join(f"{o.rates[i] / t.rates[i]:.1f}x" for o, t in zip(ours, theirs, strict=True))
            extra[f"Bosun HTTP over mcp-proxy, {clients} clients, each round"] = each

        if not args.no_contextforge:
            print("ContextForge ...", flush=True)
            with contextforge(direct) as (url, headers, tool, gateway_proc, bridge_proc):
                rows["ContextForge, streamable HTTP"] = http_path(url, headers, tool, args.calls, args.seconds,
                                                                  [gateway_proc.pid, bridge_proc.pid])  # fmt: skip
                extra["ContextForge RSS after the load"] = f"{rss_mb(gateway_proc.pid):.0f} MB"
    finally:
        shutil.rmtree(home.root, ignore_errors=True)

    base = statistics.median(rows["direct, raw stdio"].latencies)
    print(f"\necho tool, {args.calls} sequential calls; throughput over {args.seconds:g} s; milliseconds, calls/s; "
          "CPU a call with 16 clients, us: the path's own processes, the whole machine\n")  # fmt: skip
    print(f"{'path':38} {'p50':>7} {'p99':>7} {'+p50':>7} {'seq/s':>7} {'16 cl/s':>8} {'64 cl/s':>8} "
          f"{'cpu own':>8} {'cpu all':>8}")  # fmt: skip
    for name, row in rows.items():
        p50 = statistics.median(row.latencies)
        p99 = sorted(row.latencies)[int(len(row.latencies) * 0.99)]
        shown = [f"{r:8.0f}" for r in row.rates] or [f"{'-':>8}"] * 2
        shown += [f"{c:8.0f}" for c in row.cpu] or [f"{'-':>8}"] * 2
        over = f"{p50 - base:+7.2f}" if not name.endswith("(canned reply)") else f"{'':>7}"
        print(f"{name:38} {p50:7.2f} {p99:7.2f} {over} {1000 / p50:7.0f} {' '.join(shown)}")
    bosun = rows["Bosun, streamable HTTP"]
    for peer_name in ("mcp-proxy, streamable HTTP", "ContextForge, streamable HTTP"):
        if peer_name in rows:
            theirs = rows[peer_name]
            print(f"\nBosun HTTP over {peer_name.split(',')[0]}, throughput: {bosun.rates[0] / theirs.rates[0]:.1f}x "
                  f"at 16 clients, {bosun.rates[1] / theirs.rates[1]:.1f}x at 64; CPU a call (16 clients): "
                  f"{theirs.cpu[0] / bosun.cpu[0]:.1f}x less in the gateway, {theirs.cpu[1] / bosun.cpu[1]:.1f}x "
                  "less on the machine", end="")  # fmt: skip
    print()
    for name, value in extra.items():
        print(f"{name:52} {value}")


if __name__ == "__main__":
    main()
