"""Lethal-trifecta flow control: how many legitimate sessions pass and how many injected ones are stopped.

Plays the scripted sessions of ``tests/fixtures/office/scenarios.py`` through a real gateway and the
office fixture server in its container, once per flow mode in the same run: ``off`` (the baseline:
nothing stopped), ``strict`` (session-level: no send once private and untrusted data met) and
``values`` (argument provenance, the default). Prints each session's outcome and, per mode, the
share of legitimate sessions that ran to their end and of injected ones stopped at the harmful call,
with the time flow control spent per call.

    .venv/bin/python bench/trifecta.py

Needs the engine and the base images (`bosun image base`); builds the fixture on the time recipe.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.office.scenarios import POLICY, SCENARIOS, Outcome, install, run

from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.policy.flow import FlowRules
from bosun.runtime import engine
from bosun.runtime.docker import DockerBackend

MODES = ("off", "strict", "values")


def timed_checks(samples: list[float]) -> None:
    """Wrap flow control's check so the benchmark sees what each call spends in it."""
    check = FlowRules.check

    def wrapper(self: FlowRules, *args: object, **kwargs: object) -> object:
        t0 = time.perf_counter()
        try:
            return check(self, *args, **kwargs)  # type: ignore[arg-type]
        finally:
            samples.append((time.perf_counter() - t0) * 1e6)

    FlowRules.check = wrapper  # type: ignore[method-assign,assignment]


async def play(home: Home, mode: str) -> list[Outcome]:
    home.policy_file.write_text(POLICY.replace("flow:\n", f"flow:\n  mode: '{mode}'\n"))
    async with Gateway(home, DockerBackend()) as gw:
        return [await run(gw, s, f"{mode}-{i}") for i, s in enumerate(SCENARIOS)]


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    logging.getLogger("bosun").setLevel(logging.ERROR)  # every refusal is logged; the table says it better
    home = Home(Path(tempfile.mkdtemp(prefix="bosun-trifecta-"))).ensure()
    try:
        print("building the office fixture (layers cached after the first run) ...", flush=True)
        install(home, engine.client())
        samples: list[float] = []
        timed_checks(samples)
        results = {}
        for mode in MODES:
            samples.clear()
            results[mode] = (anyio.run(play, home, mode), list(samples))
    finally:
        shutil.rmtree(home.root, ignore_errors=True)

    print(f"\n{'session':36} {'kind':8} " + " ".join(f"{m:>30}" for m in MODES))
    for i, scenario in enumerate(SCENARIOS):
        cells = []
        for mode in MODES:
            outcome = results[mode][0][i]
            rule = next((r for r in ("untrusted-destination", "private-payload", "strict")
                         if outcome.refused_at is not None and f"flow:{r}" in outcome.texts[-1]), "")  # fmt: skip
            state = f"stopped@{outcome.refused_at + 1} {rule}" if outcome.refused_at is not None else "ran to end"
            cells.append(("  " if outcome.correct else "x ") + state)
        kind = "injected" if scenario.attack else "legit"
        print(f"{scenario.name:36} {kind:8} " + " ".join(f"{c:>30}" for c in cells))

    legit = sum(not s.attack for s in SCENARIOS)
    attacks = len(SCENARIOS) - legit
    print(f"\n{'mode':8} {'legitimate passed':>20} {'injected stopped':>20} {'check p50 µs':>14} {'check max µs':>14}")
    for mode in MODES:
        outcomes, checks = results[mode]
        passed = sum(o.correct for o in outcomes if not o.scenario.attack)
        stopped = sum(o.correct for o in outcomes if o.scenario.attack)
        cost = f"{statistics.median(checks):14.1f} {max(checks):14.1f}" if checks else f"{'-':>14} {'-':>14}"
        print(f"{mode:8} {f'{passed}/{legit} ({passed / legit:.0%})':>20} "
              f"{f'{stopped}/{attacks} ({stopped / attacks:.0%})':>20} {cost}")  # fmt: skip
    print("\nx marks a wrong outcome: a legitimate session stopped, or an injected one let through.")


if __name__ == "__main__":
    main()
