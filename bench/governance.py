"""What governance adds to a warm tool call: audit, policy, redaction, screening and flow control,
switched on one at a time in one gateway, against the same gateway with all of them off.

The gateway runs in this process (no transport, so the figures are the layers' own cost) in front
of the ``everything`` server's echo tool in its container. Each configuration gets the same calls,
in interleaved rounds so that the machine's drift spreads over all of them.

    .venv/bin/python bench/governance.py [--calls 1000] [--rules 50]

Needs the engine and the base images; builds ``everything`` into a scratch home (cached layers).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bosun.audit.log import Anchor, Record
from bosun.catalog.loader import load_catalog
from bosun.config import Settings
from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.images.build import build_entry
from bosun.policy.engine import Engine
from bosun.policy.rules import parse
from bosun.runtime import engine
from bosun.runtime.docker import DockerBackend
from bosun.secrets.redact import Redactor

TOOL = "everything__echo"
MESSAGE = "the quarterly numbers look fine and the meeting moves to Thursday at ten"


class NoAudit:
    """Stands in for the audit log in the configurations that leave it out."""

    def append_all(self, records: list[Record]) -> list[Anchor]:
        return [Anchor(0, "")] * len(records)


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
    gw.committer.log = real_audit if "audit" in layers else NoAudit()
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
        real_audit = gw.committer.log
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
        gw.committer.log = real_audit
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000, help="calls per configuration")
    parser.add_argument("--rules", type=int, default=50, help="policy rules when policy is on")
    args = parser.parse_args()
    logging.getLogger("bosun").setLevel(logging.ERROR)
    home = Home(Path(tempfile.mkdtemp(prefix="bosun-governance-"))).ensure()
    try:
        print("building everything into a scratch home (layers cached after the first run) ...", flush=True)
        build_entry(engine.client(), load_catalog().get("everything"), home, lambda _m: None)
        Settings.model_validate({"servers": {"everything": {}}}).save(home.config_file)
        samples = anyio.run(measure, home, args.calls, args.rules)
    finally:
        shutil.rmtree(home.root, ignore_errors=True)

    base = statistics.median(samples["all off"])
    print(f"\nwarm echo call in process, {args.calls} calls per configuration, {args.rules} policy rules, ms\n")
    print(f"{'configuration':26} {'p50':>8} {'p99':>8} {'added p50':>10} {'added %':>8}")
    for name, values in samples.items():
        p50 = statistics.median(values)
        p99 = sorted(values)[int(len(values) * 0.99)]
        print(f"{name:26} {p50:8.3f} {p99:8.3f} {p50 - base:+10.3f} {(p50 - base) / base:+8.1%}")


if __name__ == "__main__":
    main()
