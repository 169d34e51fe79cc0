"""A server container's stdio, reached two ways: the engine's attach stream, and Bosun's FIFOs.

The same `everything` container is started by Bosun's Docker backend, with the same hardening, once
for each path. Then raw JSON-RPC is sent over it, with no SDK and no gateway. Figures: p50/p99 of
sequential echo calls, and calls/s with 16 requests pipelined on the one connection. The two paths
alternate round by round so that the machine's drift spreads over both.

    .venv/bin/python bench/server_stdio.py [--calls 3000] [--pipelined 20000] [--rounds 2]

Needs the engine and the base images; builds ``everything`` into a scratch home (cached layers).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from bosun.catalog.loader import load_catalog
from bosun.home import Home
from bosun.images.base import SERVER_UID
from bosun.images.build import build_entry
from bosun.images.lock import Lock
from bosun.runtime import engine
from bosun.runtime.backend import ContainerSpec, Limits, StdioChannel
from bosun.runtime.docker import DockerBackend

HELLO = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}


def _call(i: int) -> bytes:
    params = {"name": "echo", "arguments": {"message": f"hello {i}"}}
    return json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": params}).encode() + b"\n"


class Lines:
    """A channel's replies, a line at a time, each checked to be a result."""

    def __init__(self, channel: StdioChannel) -> None:
        self.channel = channel
        self._buf = b""

    async def reply(self) -> None:
        while True:
            while b"\n" not in self._buf:
                self._buf += await self.channel.receive()
            line, _, self._buf = self._buf.partition(b"\n")
            if b'"result"' in line:
                return
            if b'"method"' not in line:  # the server's own notifications pass; anything else is wrong
                raise RuntimeError(f"not a result: {line[:200]!r}")


async def measure(backend: DockerBackend, spec: ContainerSpec, calls: int, pipelined: int) -> tuple[list[float], float]:
    info, channel = await backend.start(spec, lambda _data: None)
    try:
        lines = Lines(channel)
        hello = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": HELLO}
        await channel.send(json.dumps(hello).encode() + b"\n")
        await lines.reply()
        await channel.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        for i in range(300):  # warm-up
            await channel.send(_call(i))
            await lines.reply()
        latencies = []
        for i in range(calls):
            t0 = time.perf_counter()
            await channel.send(_call(i))
            await lines.reply()
            latencies.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        for i in range(16):
            await channel.send(_call(i))
        for i in range(16, pipelined + 16):
            await lines.reply()
            if i < pipelined:
                await channel.send(_call(i))
        return latencies, pipelined / (time.perf_counter() - t0)
    finally:
        await channel.aclose()
        await backend.stop(info.id, 0)


async def run(home: Home, calls: int, pipelined: int, rounds: int) -> dict[str, tuple[list[float], list[float]]]:
    entry = load_catalog().get("everything")
    image = Lock.load(home.lock_file).images["everything"].image_id
    backend = DockerBackend()
    if not backend.local:
        raise SystemExit("the engine is not on this host: FIFOs cannot be measured")
    results: dict[str, tuple[list[float], list[float]]] = {"attach stream": ([], []), "FIFOs": ([], [])}
    for r in range(rounds):
        for path, stdio_dir in (("attach stream", None), ("FIFOs", home.stdio_dir)):
            spec = ContainerSpec(
                name=f"bosun-bench-stdio-{r}-{stdio_dir is not None:d}",
                image=image,
                server="everything",
                command=entry.command,
                args=entry.args,
                limits=Limits(entry.resources.memory_mb, entry.resources.cpus, entry.resources.pids),
                user=f"{SERVER_UID}:{SERVER_UID}",
                stdio_dir=stdio_dir,
            )
            latencies, rate = await measure(backend, spec, calls, pipelined)
            results[path][0].extend(latencies)
            results[path][1].append(rate)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="sequential calls per path and round")
    parser.add_argument("--pipelined", type=int, default=20000, help="pipelined calls per path and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    home = Home(Path(tempfile.mkdtemp(prefix="bosun-server-stdio-"))).ensure()
    try:
        print("building everything into a scratch home (layers cached after the first run) ...", flush=True)
        build_entry(engine.client(), load_catalog().get("everything"), home, lambda _m: None)
        results = anyio.run(run, home, args.calls, args.pipelined, args.rounds, backend_options={"use_uvloop": True})
    finally:
        shutil.rmtree(home.root, ignore_errors=True)
    print(f"\nraw JSON-RPC echo to one container, {args.rounds} rounds; milliseconds, calls/s\n")
    print(f"{'path':14} {'p50':>7} {'p99':>7} {'16 pipelined/s':>15}")
    for path, (latencies, rates) in results.items():
        p99 = sorted(latencies)[int(len(latencies) * 0.99)]
        print(f"{path:14} {statistics.median(latencies):7.3f} {p99:7.3f} {statistics.median(rates):15.0f}")
    (attach_ms, attach_rates), (fifo_ms, fifo_rates) = results["attach stream"], results["FIFOs"]
    latency = statistics.median(fifo_ms) / statistics.median(attach_ms)
    throughput = statistics.median(fifo_rates) / statistics.median(attach_rates)
    print(f"\nFIFOs against the attach stream: p50 {latency:.2f}x, 16 pipelined {throughput:.1f}x")


if __name__ == "__main__":
    main()
