"""Soak: many sessions across many servers through one HTTP gateway, then nothing left behind.

Ten servers (the `everything` image under ten catalog names, so ten containers), 50 MCP sessions
spread over a few processes, each calling a random server's echo for the whole run. Every reply is
checked. At the end the gateway is stopped and the engine asked for containers it left.

    .venv/bin/python bench/soak.py [--sessions 50] [--servers 10] [--seconds 60]

Needs the engine and the base images. Exits 1 on any error or leftover container.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.processes import free_port, started
from peers import Http, call, checked

from bosun.catalog.loader import load_catalog
from bosun.config import Settings
from bosun.home import Home
from bosun.images.build import build_entry
from bosun.runtime import engine
from bosun.runtime.backend import LABEL_GATEWAY


async def _sessions(url: str, headers: dict[str, str], servers: list[str], n: int, seconds: float
                    ) -> tuple[list[float], list[str]]:  # fmt: skip
    latencies: list[float] = []
    errors: list[str] = []
    peers = [await Http.start(url, headers) for _ in range(n)]
    deadline = time.perf_counter() + seconds

    async def loop(peer: Http, k: int) -> None:
        i = k * 10_000_000
        while time.perf_counter() < deadline:
            i += 1
            t0 = time.perf_counter()
            try:
                checked(await peer.request(call(i, f"{random.choice(servers)}__echo")))
                latencies.append((time.perf_counter() - t0) * 1000)
            except Exception as e:
                errors.append(str(e)[:200])

    try:
        await asyncio.gather(*(loop(p, k) for k, p in enumerate(peers)))
    finally:
        for peer in peers:
            await peer.close()
    return latencies, errors


def _process(args: tuple[str, dict[str, str], list[str], int, float]) -> tuple[list[float], list[str]]:
    return asyncio.run(_sessions(*args))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    home = Home(Path(tempfile.mkdtemp(prefix="bosun-soak-"))).ensure()
    client = engine.client()
    try:
        print(f"building {args.servers} servers from the everything recipe (layers cached) ...", flush=True)
        base = load_catalog().get("everything")
        names = ["everything"] + [f"everything-{i}" for i in range(1, args.servers)]
        settings = Settings()
        (home.root / "catalog").mkdir(exist_ok=True)
        for name in names:
            entry = base.model_copy(update={"name": name})
            (home.root / "catalog" / f"{name}.yaml").write_text(yaml.safe_dump(entry.model_dump(mode="json")))
            build_entry(client, entry, home, lambda _m: None)
            settings.enable(entry, [])
        settings.save(home.config_file)

        port = free_port()
        env = {**os.environ, "BOSUN_HOME": str(home.root)}
        argv = [sys.executable, "-m", "bosun", "gateway", "run", "--transport", "http", "--port", str(port),
                "--log-level", "warning"]  # fmt: skip
        with started(argv, f"http://127.0.0.1:{port}/healthz", "the gateway", env=env):
            gateway_id = str(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["gateway"])
            auth = {"Authorization": f"Bearer {home.gateway_token()[0]}"}
            url = f"http://127.0.0.1:{port}/mcp"
            processes = 4
            share = [args.sessions // processes + (1 if i < args.sessions % processes else 0) for i in range(processes)]
            print(f"{args.sessions} sessions over {args.servers} servers for {args.seconds:g} s ...", flush=True)
            with multiprocessing.get_context("spawn").Pool(processes) as pool:
                parts = pool.map(_process, [(url, auth, names, n, args.seconds) for n in share])
            running = len(client.containers.list(filters={"label": f"{LABEL_GATEWAY}={gateway_id}"}))
        left = client.containers.list(all=True, filters={"label": f"{LABEL_GATEWAY}={gateway_id}"})
    finally:
        shutil.rmtree(home.root, ignore_errors=True)

    latencies = [x for lat, _ in parts for x in lat]
    errors = [e for _, errs in parts for e in errs]
    print(
        f"\ncalls {len(latencies)}, errors {len(errors)}, {len(latencies) / args.seconds:.0f} calls/s, "
        f"p50 {statistics.median(latencies):.1f} ms, p99 {sorted(latencies)[int(len(latencies) * 0.99)]:.1f} ms"
    )
    print(f"server containers during the run: {running}; left after the gateway stopped: {len(left)}")
    for e in sorted(set(errors))[:5]:
        print(f"  error: {e}")
    return 1 if errors or left else 0


if __name__ == "__main__":
    sys.exit(main())
