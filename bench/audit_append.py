"""What the audit adds to a call: one hash-chained record committed per request.

Measures ``AuditLog.append`` (BEGIN IMMEDIATE, read the chain head, hash, insert, commit; WAL with
synchronous=NORMAL) against a baseline in the same run: a plain SQLite insert-and-commit of the same
row into the same kind of database, with no chain. Prints p50/p99 per record for both, and the cost
per record when 4 or 16 are committed together (``append_all``, as the gateway commits the records
of the calls that finish in one event-loop turn).

    .venv/bin/python bench/audit_append.py [--records 5000]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bosun.audit.log import AuditLog, Record, shape


def pct(samples: list[float], p: float) -> float:
    return statistics.quantiles(samples, n=100)[int(p) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    n = parser.parse_args().records
    record = Record(
        "tools/call",
        session="http:0123456789abcdef",
        server="time",
        tool="get_current_time",
        duration_ms=1.234,
        image="sha256:" + "a" * 64,
        detail={"args": shape({"timezone": "UTC"})},
    )
    with tempfile.TemporaryDirectory() as tmp:
        plain = sqlite3.connect(Path(tmp) / "plain.db", isolation_level=None)
        plain.execute("PRAGMA journal_mode=WAL")
        plain.execute("PRAGMA synchronous=NORMAL")
        plain.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, kind TEXT, server TEXT, tool TEXT, detail TEXT)")
        baseline = []
        for _ in range(n):
            t0 = time.perf_counter()
            plain.execute("INSERT INTO t (kind, server, tool, detail) VALUES (?, ?, ?, ?)",
                          (record.kind, record.server, record.tool, json.dumps(record.detail)))  # fmt: skip
            baseline.append((time.perf_counter() - t0) * 1e6)
        log = AuditLog(Path(tmp) / "audit.db")
        chained = []
        for _ in range(n):
            t0 = time.perf_counter()
            log.append(record)
            chained.append((time.perf_counter() - t0) * 1e6)
        together = {}
        for size in (4, 16):
            per_record = []
            for _ in range(n // size):
                t0 = time.perf_counter()
                log.append_all([record] * size)
                per_record.append((time.perf_counter() - t0) * 1e6 / size)
            together[size] = per_record
        t0 = time.perf_counter()
        count, problems = log.verify()
        verify_s = time.perf_counter() - t0
    print(f"{n} records each")
    print(f"plain SQLite insert (baseline): p50 {pct(baseline, 50):7.1f} us  p99 {pct(baseline, 99):7.1f} us")
    print(f"audit append (chained):         p50 {pct(chained, 50):7.1f} us  p99 {pct(chained, 99):7.1f} us")
    print(f"added per call over baseline:   p50 {pct(chained, 50) - pct(baseline, 50):7.1f} us")
    for size, per_record in together.items():
        p50, p99 = pct(per_record, 50), pct(per_record, 99)
        print(f"audit append_all, {size:2d} together: p50 {p50:7.1f} us  p99 {p99:7.1f} us a record")
    print(f"verify: {count} records in {verify_s * 1000:.0f} ms ({len(problems)} problems)")


if __name__ == "__main__":
    main()
