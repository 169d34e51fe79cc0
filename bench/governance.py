"""What governance adds to a warm tool call: audit, policy, redaction, screening and flow control,
switched on one at a time in one gateway, against the same gateway with all of them off.

The gateway runs in this process in front of the ``everything`` server's echo tool in its container.
Each configuration gets the same calls, in interleaved rounds so that the machine's drift spreads
over all of them. Two ways to call it:

- in process (the default): ``Gateway.call_tool`` itself, no transport, so the figures are the
  layers' own cost against the cheapest call there is;
- ``--http``: the gateway also serves streamable HTTP, and the peers benchmark's raw JSON-RPC
  client, in processes of its own, makes the calls: sequential ones for latency, then 16 clients
  at once for throughput, during which the gateway's CPU time a call is measured too (the figure
  least moved by the rest of the machine). This is what an agent sees.

    .venv/bin/python bench/governance.py [--calls 1000] [--rules 50] [--rounds N] [--http [--seconds 3]]

Needs the engine and the base images; builds ``everything`` into a scratch home (cached layers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

from bosun.audit.journal import Chained
from bosun.audit.log import Record
from bosun.catalog.loader import load_catalog
from bosun.config import Settings
from bosun.gateway.core import Gateway
from bosun.gateway.server import build_server
from bosun.gateway.transports import serve_http
from bosun.home import Home
from bosun.images.build import build_entry
from bosun.policy.engine import Engine
from bosun.policy.rules import parse
from bosun.runtime import engine
from bosun.runtime.docker import DockerBackend
from bosun.secrets.redact import Redactor

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import peers  # the same raw JSON-RPC client as the peers benchmark
from fixtures.processes import free_port

TOOL = "everything__echo"
MESSAGE = "the quarterly numbers look fine and the meeting moves to Thursday at ten"


class NoAudit:
    """Stands in for the audit journal in the configurations that leave it out."""

    def write(self, records: list[Record], chained: list[Chained | None]) -> None:
        pass


def policy(rules: int, *, flow: bool, screening: bool) -> Engine:
    """``rules`` rules that do not match the echo call (each is still evaluated), plus one that does."""
    lines = ["rules:"]
    for i in range(rules - 1):
        lines += [f"  - {{id: r{i}, effect: deny, servers: [srv{i}], tools: ['write_*'], "
                  f"when: [{{arg: path, regex: '^/secret/{i}/'}}]}}"]  # fmt: skip
    lines += ["  - {id: echo-ok, effect: allow, tools: [everything__echo], when: [{arg: message, present: true}]}"]
    # Echo as the worst case: private, untrusted and a send, so every call is both checked and remembered.
    lines += [
        f"flow: {{mode: {'values' if flow else 'off'}, labels: [{{tools: [{TOOL}], labels: "
        "[private_data, untrusted_content, external_send]}], known_destinations: "
        f"[{{values: ['tool:{TOOL}']}}]}}",
        f"screening: {{injection: {'annotate' if screening else 'off'}}}",
    ]
    return Engine(parse("\n".join(lines), "bench"))


def configure(gw: Gateway, real_audit: Any, name: str, rules: int) -> None:
    layers = CONFIGS[name]
    gw.committer.sink = real_audit if "audit" in layers else NoAudit()
    gw.policy = policy(rules if "policy" in layers else 0, flow="flow" in layers, screening="screening" in layers)
    gw.redactor = Redactor({}, formats="redaction" in layers)


CONFIGS = {
    "all off": set(),
    "+ audit": {"audit"},
    "+ policy": {"audit", "policy"},
    "+ redaction": {"audit", "policy", "redaction"},
    "+ screening": {"audit", "policy", "redaction", "screening"},
    "+ flow control (all on)": {"audit", "policy", "redaction", "screening", "flow"},
}


async def measure(home: Home, calls: int, rules: int, rounds: int = 10) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in CONFIGS}
    async with Gateway(home, DockerBackend()) as gw:
        real_audit = gw.committer.sink
        for i in range(50):  # container started, routes and pins loaded
            await gw.call_tool("bench", TOOL, {"message": f"warm-up {i}"})
        for r in range(rounds):
            for name in CONFIGS:
                configure(gw, real_audit, name, rules)
                session = f"bench-{r}-{name}"  # every configuration starts its round with a fresh session
                for i in range(calls // rounds):
                    t0 = time.perf_counter()
                    result = await gw.call_tool(session, TOOL, {"message": f"{MESSAGE} {r}-{i}"})
                    samples[name].append((time.perf_counter() - t0) * 1000)
                    assert not result.is_error, result
        gw.committer.sink = real_audit
    return samples


def _sequential(args: tuple[str, dict[str, str], int]) -> list[float]:
    """Sequential calls from a process of their own, so the client does not share the gateway's GIL."""
    url, headers, calls = args
    return asyncio.run(peers.http_sequential(url, headers, TOOL, calls))


async def measure_http(home: Home, calls: int, rules: int, seconds: float, rounds: int = 3
                       ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]:  # fmt: skip
    """Latency samples, calls/s at 16 clients and the gateway's CPU a call (us) meanwhile, per configuration,
    over streamable HTTP."""
    latency: dict[str, list[float]] = {name: [] for name in CONFIGS}
    rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
    cpu: dict[str, list[float]] = {name: [] for name in CONFIGS}
    port, token = free_port(), home.gateway_token()[0]
    url, headers = f"http://127.0.0.1:{port}/mcp", {"Authorization": f"Bearer {token}"}
    async with Gateway(home, DockerBackend()) as gw, anyio.create_task_group() as tg:
        tg.start_soon(serve_http, gw, build_server(gw), "127.0.0.1", port, token)
        real_audit = gw.committer.sink
        with multiprocessing.get_context("spawn").Pool(1) as client:
            await anyio.to_thread.run_sync(_wait_up, f"http://127.0.0.1:{port}/healthz")
            await anyio.to_thread.run_sync(peers.http_throughput, url, headers, TOOL, 16, 1.0, None)  # warm
            gc.freeze()  # as `bosun gateway run` does once started
            for r in range(rounds):
                for name in CONFIGS:
                    configure(gw, real_audit, name, rules)
                    print(f"round {r + 1}/{rounds}: {name} ...", flush=True)
                    latency[name] += await anyio.to_thread.run_sync(client.apply, _sequential,
                                                                    ((url, headers, calls // rounds),))  # fmt: skip
                    # The gateway is this process: its CPU time, from before the clients open their sessions
                    # to after they close them (16 sessions against thousands of calls).
                    used = _gateway_cpu(gw)
                    rate, _ = await anyio.to_thread.run_sync(peers.http_throughput, url, headers, TOOL, 16, seconds,
                                                             None)  # fmt: skip
                    rates[name].append(rate)
                    cpu[name].append((_gateway_cpu(gw) - used) / (rate * seconds) * 1e6)
        gw.committer.sink = real_audit
        tg.cancel_scope.cancel()
    return latency, rates, cpu


def _gateway_cpu(gw: Gateway) -> float:
    """CPU seconds used so far by the gateway: this process, and its audit chainer process."""
    pid = gw.journal.chainer_pid
    return time.process_time() + (peers.process_ticks(pid) / os.sysconf("SC_CLK_TCK") if pid else 0.0)


def _wait_up(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the gateway did not answer {url} within {timeout_s:g}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000, help="calls per configuration")
    parser.add_argument("--rules", type=int, default=50, help="policy rules when policy is on")
    parser.add_argument("--http", action="store_true", help="call over streamable HTTP from other processes")
    parser.add_argument("--seconds", type=float, default=3.0, help="--http: seconds of 16 clients per round")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default: 10 in process, 3 over HTTP)")
    args = parser.parse_args()
    logging.getLogger("bosun").setLevel(logging.ERROR)
    logging.getLogger("uvicorn").setLevel(logging.CRITICAL)  # its lifespan reports the cancellation that ends it
    home = Home(Path(tempfile.mkdtemp(prefix="bosun-governance-"))).ensure()
    rates: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    try:
        print("building everything into a scratch home (layers cached after the first run) ...", flush=True)
        build_entry(engine.client(), load_catalog().get("everything"), home, lambda _m: None)
        Settings.model_validate({"servers": {"everything": {}}}).save(home.config_file)
        if args.http:
            samples, rates, cpu = anyio.run(measure_http, home, args.calls, args.rules, args.seconds, args.rounds or 3,
                                            backend_options={"use_uvloop": True})  # fmt: skip
        else:
            samples = anyio.run(measure, home, args.calls, args.rules, args.rounds or 10)
    finally:
        shutil.rmtree(home.root, ignore_errors=True)

    where = "over streamable HTTP" if args.http else "in process"
    base = statistics.median(samples["all off"])
    print(f"\nwarm echo call {where}, {args.calls} calls per configuration, {args.rules} policy rules, ms\n")
    head = f"{'configuration':26} {'p50':>8} {'p99':>8} {'added p50':>10} {'added %':>8}"
    print(head + (f" {'16 clients/s':>13} {'change':>8} {'cpu us/call':>12} {'added':>8}" if rates else ""))
    base_rate = statistics.median(rates["all off"]) if rates else 0.0
    base_cpu = statistics.median(cpu["all off"]) if cpu else 0.0
    for name, values in samples.items():
        p50 = statistics.median(values)
        p99 = sorted(values)[int(len(values) * 0.99)]
        row = f"{name:26} {p50:8.3f} {p99:8.3f} {p50 - base:+10.3f} {(p50 - base) / base:+8.1%}"
        if rates:
            rate, used = statistics.median(rates[name]), statistics.median(cpu[name])
            row += f" {rate:13.0f} {(rate - base_rate) / base_rate:+8.1%}"
            row += f" {used:12.0f} {(used - base_cpu) / base_cpu:+8.1%}"
        print(row)


if __name__ == "__main__":
    main()
