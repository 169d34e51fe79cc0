"""What a policy decision costs on the call path, against a baseline in the same run.

Compiles a policy of N rules (agents, groups, server and tool patterns, argument regexes, ranges,
nested paths; one rate rule) and times ``Engine.decide`` for a mix of calls that hit early, late and
no rules. The baseline is the same loop calling a function that returns a constant decision.

    .venv/bin/python bench/policy_decide.py [--rules 50] [--decisions 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bosun.policy.engine import Decision, Engine
from bosun.policy.rules import parse


def policy_text(n: int) -> str:
    rules = []
    for i in range(n):
        rules.append(
            f"  - {{id: r{i}, effect: {'deny' if i % 3 == 0 else 'allow'}, groups: [g{i % 7}], servers: [s{i % 11}*],"
            f" tools: [t{i % 13}_*], when: [{{arg: 'payload.items[0].to', regex: '^user{i}@'}}]}}"
        )
    rules.append("  - {id: rate, tools: [fetch], rate: {calls: 1000000, per_seconds: 60}}")
    return "rules:\n" + "\n".join(rules) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--decisions", type=int, default=20000)
    opts = parser.parse_args()
    engine = Engine(parse(policy_text(opts.rules), "bench"))
    calls = [
        ("a", ["g1"], "s1x", "t1_send", {"payload": {"items": [{"to": "user1@x"}]}}),  # matches early
        ("b", ["g5"], "s9x", "t9_send", {"payload": {"items": [{"to": "nobody@x"}]}}),  # scoped, test fails
        ("c", [], "other", "other", {}),  # matches nothing
        ("d", [], "fetch", "fetch", {"url": "https://x"}),  # the rate rule
    ]
    fixed = Decision("allow")

    def constant(*_: object) -> Decision:
        return fixed

    for name, fn in (("baseline (constant decision)", constant), (f"policy, {opts.rules} rules", engine.decide)):
        samples = []
        for i in range(opts.decisions):
            agent, groups, server, tool, args = calls[i % len(calls)]
            t0 = time.perf_counter()
            fn(agent, groups, server, tool, args)
            samples.append((time.perf_counter() - t0) * 1e6)
        q = statistics.quantiles(samples, n=100)
        print(f"{name:32s} p50 {q[49]:7.2f} us  p99 {q[98]:7.2f} us")


if __name__ == "__main__":
    main()
