"""The audit chain: an edited, deleted or reordered record is found and named; a kill -9 loses no
acknowledged record."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bosun.audit.log import Anchor, AuditLog, Record


def filled(tmp_path: Path, n: int = 6) -> AuditLog:
    log = AuditLog(tmp_path / "audit.db")
    for i in range(n):
        log.append(Record("tools/call", agent="a", server="time", tool=f"t{i}", detail={"args": {"x": "str:3"}}))
    return log


def tamper(path: Path, *statements: str) -> None:
    # What someone with the file and the sqlite3 tool could do: drop the guards, then edit.
    db = sqlite3.connect(path)
    db.executescript("DROP TRIGGER records_no_update; DROP TRIGGER records_no_delete;" + ";".join(statements))
    db.close()


def test_appends_chain_and_verify(tmp_path: Path) -> None:
    log = filled(tmp_path)
    assert log.verify() == (6, [])
    records = log.last(2)
    assert [r.seq for r in records] == [5, 6] and records[1].prev == records[0].hash
    assert records[0].detail == {"args": {"x": "str:3"}}
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        log._db.execute("UPDATE records SET outcome = 'ok' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        log._db.execute("DELETE FROM records WHERE seq = 2")


def test_the_hash_covers_the_records_canonical_json_as_it_always_has(tmp_path: Path) -> None:
    """Appends build the hashed text around the stored detail instead of serialising the whole record; the
    text must stay what it was, or chains written before would no longer verify."""
    log = AuditLog(tmp_path / "audit.db")
    details = [{}, {"args": {"b": "str:3", "a": ["int", {"z": 1, "y": None}]}}, {"kept": 'naïve ☃ "q" \n', "n": 1.5}]
    # Text that json escapes (quotes, a control character, a tab, non-ASCII left as is) and floats of
    # every shape json writes.
    reasons = ['a,"detail":{} b', "tab\there, bell\x07, backslash \\", "ünïcode ☃ \u2028"]
    for i, detail in enumerate(details):
        anchor = log.append(Record("tools/call", agent="ägent", reason=reasons[i], detail=detail,
                                   duration_ms=(0.1 * i, 1e-07, 12345678901234.5)[i]))  # fmt: skip
        stored = log.get(anchor.seq)
        assert stored is not None and stored.hash == anchor.hash
        payload = {
            k: getattr(stored, k)
            for k in (
                "seq",
                "ts",
                "kind",
                "agent",
                "session",
                "server",
                "tool",
                "decision",
                "reason",
                "outcome",
                "duration_ms",
                "image",
                "detail",
            )
        }
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert anchor.hash == hashlib.sha256(f"{stored.prev}\n{canonical}".encode()).hexdigest()
    assert log.verify() == (3, [])


def test_edited_record_is_named(tmp_path: Path) -> None:
    filled(tmp_path).close()
    tamper(tmp_path / "audit.db", "UPDATE records SET tool = 'harmless' WHERE seq = 3")
    _, problems = AuditLog(tmp_path / "audit.db").verify()
    assert [str(p) for p in problems] == ["record 3: its content does not match its hash (edited, or moved here)"]


def test_deleted_record_is_named(tmp_path: Path) -> None:
    filled(tmp_path).close()
    tamper(tmp_path / "audit.db", "DELETE FROM records WHERE seq = 4")
    count, problems = AuditLog(tmp_path / "audit.db").verify()
    assert count == 5
    assert [str(p) for p in problems] == ["record 5: record(s) 4 before it are missing (deleted)"]


def test_an_anchor_catches_truncation_and_rewriting(tmp_path: Path) -> None:
    log = filled(tmp_path)
    anchor = log.head()
    assert anchor is not None and anchor.seq == 6 and Anchor.parse(str(anchor)) == anchor
    log.close()
    tamper(tmp_path / "audit.db", "DELETE FROM records WHERE seq >= 5")
    truncated = AuditLog(tmp_path / "audit.db")
    assert truncated.verify() == (4, [])  # the chain alone cannot tell
    assert [str(p) for p in truncated.verify([anchor])[1]] == [
        "record 6: anchored, but gone: the audit was truncated or replaced"
    ]
    rewritten = Anchor(4, "0" * 64)
    assert "its hash differs from its anchor" in str(truncated.verify([rewritten])[1][0])
    with pytest.raises(ValueError, match="is not an anchor"):
        Anchor.parse("6:nothex")


def test_reordered_pair_is_named(tmp_path: Path) -> None:
    filled(tmp_path).close()
    cols = "ts, kind, agent, session, server, tool, decision, reason, outcome, duration_ms, image, detail, prev, hash"
    tamper(
        tmp_path / "audit.db",
        "CREATE TEMP TABLE a AS SELECT * FROM records WHERE seq = 2",
        "CREATE TEMP TABLE b AS SELECT * FROM records WHERE seq = 3",
        f"UPDATE records SET ({cols}) = (SELECT {cols} FROM b) WHERE seq = 2",
        f"UPDATE records SET ({cols}) = (SELECT {cols} FROM a) WHERE seq = 3",
    )
    _, problems = AuditLog(tmp_path / "audit.db").verify()
    assert [str(p) for p in problems] == [
        "record 2: its content does not match its hash (edited, or moved here)",
        "record 3: its content does not match its hash (edited, or moved here)",
        "record 4: it does not follow the record before it (reordered or removed)",
    ]


def test_two_writers_share_one_chain(tmp_path: Path) -> None:
    one, two = AuditLog(tmp_path / "audit.db"), AuditLog(tmp_path / "audit.db")
    for i in range(10):
        (one if i % 2 else two).append(Record("tools/list", agent=str(i)))
    assert one.verify() == (10, [])


WRITER = """
import sys
from pathlib import Path
from bosun.audit.log import Anchor, AuditLog, Record
log = AuditLog(Path(sys.argv[1]))
i = 0
while True:
    stored = log.append(Record("tools/call", tool=f"t{i}", detail={"n": i}))
    print(stored.seq, flush=True)  # the acknowledgement: printed only after the commit
    i += 1
"""


def test_kill_9_loses_no_acknowledged_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    acked = [int(proc.stdout.readline()) for _ in range(300)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    log = AuditLog(path)
    count, problems = log.verify()
    assert problems == [] and count >= acked[-1]
    assert {r.seq for r in log.records()} >= set(acked)
