"""The audit journal: records kept ahead of the chain, chained in order and once, also after a kill -9."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from bosun.audit import journal as journal_module
from bosun.audit.journal import AuditBehind, Journal, recover, settle
from bosun.audit.log import AuditLog, Record

# A gateway in miniature: keeps records in its journal, one write each, then dies without a word.
_KILLED = """
import os, signal, sys
from pathlib import Path
from bosun.audit.journal import Journal
from bosun.audit.log import AuditLog, Record
journal = Journal(AuditLog(Path(sys.argv[1])))
for i in range(int(sys.argv[2])):
    journal.write([Record("tools/call", tool=f"t{i}", detail={"args": {"n": f"int:{i}"}})], [None])
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_gateway(db: Path, records: int) -> Path:
    """The journal a killed writer left behind."""
    done = subprocess.run([sys.executable, "-c", _KILLED, str(db), str(records)], capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr
    return sorted(db.with_suffix(".journal").glob("*.jsonl"))[-1]  # named by time, so the newest is last


def _tools(log: AuditLog) -> list[str]:
    return [r.tool for r in log.records()]


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit.db")


@pytest.fixture
async def journal(log: AuditLog) -> AsyncIterator[Journal]:
    """A gateway's journal; its chainer, once started, is stopped at the end."""
    kept = Journal(log)
    yield kept
    await kept.aclose()


@pytest.mark.anyio
async def test_records_are_kept_then_chained_in_order_and_their_journal_goes(log: AuditLog, journal: Journal) -> None:
    told: list[int] = []
    journal.write([Record("tools/call", tool="a"), Record("tools/call", tool="b")], [told.append, None])
    journal.write([Record("tools/call", tool="c")], [told.append])
    (kept,) = log.journal_dir.glob("*.jsonl")
    assert (
        len(kept.read_bytes().splitlines()) == 1 + 3 and _tools(log) == []
    )  # a header and three records, not chained yet

    assert await journal.chain_now()  # by the chainer process
    assert _tools(log) == ["a", "b", "c"] and told == [1, 3]
    assert not kept.exists() and log.journals() == {kept.stem}  # marked, so that a copy found later is not chained
    journal.write([Record("tools/call", tool="d")], [None])
    assert await journal.chain_now()
    assert kept.stem not in log.journals()  # its file is gone: the mark is no longer needed
    assert log.verify() == (4, [])
    await journal.aclose()
    assert journal._chainer is not None and journal._chainer.process.returncode == 0


def test_a_killed_gateways_journal_is_chained_once_by_whoever_comes_next(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    left = _killed_gateway(db, 3)
    log = AuditLog(db)
    assert _tools(log) == []
    assert settle(log)  # what `bosun audit` and a starting gateway do
    assert _tools(log) == ["t0", "t1", "t2"] and log.records()[1].detail == {"args": {"n": "int:1"}}
    assert not left.exists() and recover(log) == 0 and log.journals() == set()
    assert log.verify() == (3, [])


def test_a_journal_found_again_after_it_was_chained_is_not_chained_twice(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    left = _killed_gateway(db, 2)
    saved = left.read_bytes()
    log = AuditLog(db)
    assert recover(log) == 2
    left.write_bytes(saved)  # as if the chaining process died between its commit and removing the file
    log.ingest(left.stem, [])  # ...before the mark was forgotten
    assert recover(log) == 0 and not left.exists()
    assert _tools(log) == ["t0", "t1"]


def test_a_line_cut_short_by_the_kill_is_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "audit.db"
    left = _killed_gateway(db, 2)
    with left.open("ab") as f:
        f.write(b'["tools/call","","","","t2"')  # the write the kill interrupted; its request was never answered
    log = AuditLog(db)
    assert recover(log) == 2 and _tools(log) == ["t0", "t1"]
    assert "was cut short" in caplog.text


def test_an_unreadable_journal_stays_in_place_and_the_others_are_chained(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # fmt: skip
    caplog.set_level(logging.ERROR)
    db = tmp_path / "audit.db"
    bad = _killed_gateway(db, 1)
    header = bad.read_bytes().splitlines(keepends=True)[0]
    bad.write_bytes(header + b'{"not": "a record"}\n')
    good = _killed_gateway(db, 1)
    log = AuditLog(db)
    assert recover(log) == 1 and _tools(log) == ["t0"]
    assert bad.exists() and not good.exists()
    assert f"the journal {bad} could not be chained (line 2 is not an audit record)" in caplog.text
    assert settle(log, timeout_s=0.2)  # a reader does not wait for it: no gateway will chain it


def test_a_journal_of_another_version_is_read_by_its_fields_names(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db")
    log.journal_dir.mkdir()
    older, newer = log.journal_dir / "1-1-a.jsonl", log.journal_dir / "2-1-b.jsonl"  # left by gateways gone
    # As a gateway whose records had no image field (and a different order) would have written it.
    fields = ["tool", "kind", "agent", "session", "server", "decision", "reason", "outcome", "duration_ms",
              "detail", "ts"]  # fmt: skip
    row = ["echo", "tools/call", "a", "s", "srv", "allow", "", "ok", 1.5, {"args": {}}, "2026-11-25T00:00:00+00:00"]
    older.write_text(json.dumps({"bosun_audit_journal": 1, "fields": fields}) + "\n" + json.dumps(row) + "\n")
    newer.write_text(json.dumps({"bosun_audit_journal": 1, "fields": [*fields, "mood"]}) + "\n")
    assert recover(log) == 1
    (record,) = log.records()
    assert (record.tool, record.server, record.duration_ms, record.image) == ("echo", "srv", 1.5, "")
    assert newer.exists()  # a field this version does not know is not dropped without a trace: left in place
    assert log.verify() == (1, [])


@pytest.mark.anyio
async def test_chaining_waits_for_another_writer_off_the_gateway_then_fails_closed_in_time(
    log: AuditLog, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    monkeypatch.setattr(journal_module, "CHAIN_LAG_MAX_S", 0.3)
    other = sqlite3.connect(log.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    async with anyio.create_task_group() as tg:
        tg.start_soon(journal.run)
        journal.write([Record("tools/call", tool="a")], [None])
        started = time.monotonic()
        assert not await journal.chain_now(timeout_s=0.2)
        assert time.monotonic() - started < 0.5  # the chainer waits, not the gateway
        journal.write([Record("tools/call", tool="b")], [None])  # calls go on meanwhile...
        with anyio.fail_after(5):
            while journal._failing is None:  # the chainer said why (its wait for the lock is a second)
                await anyio.sleep(0.05)
        with pytest.raises(AuditBehind, match=r"not chained its records for over 0.3s \(database is locked\)"):
            journal.write([Record("tools/call", tool="c")], [None])  # ...until the audit is too far behind
        assert _tools(log) == [] and journal.behind == 2
        other.execute("ROLLBACK")
        assert await journal.chain_now(timeout_s=5) and _tools(log) == ["a", "b"]
        journal.write([Record("tools/call", tool="d")], [None])  # taken again
        assert await journal.chain_now() and _tools(log) == ["a", "b", "d"]
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_settle_waits_for_a_live_gateways_journal(log: AuditLog, journal: Journal) -> None:
    # Alive: its journal is locked, so no reader takes it for one left behind.
    journal.write([Record("tools/call", tool="a")], [None])
    assert not settle(AuditLog(log.path), timeout_s=0.2)
    assert _tools(log) == []
    assert await journal.chain_now()
    assert settle(AuditLog(log.path), timeout_s=0.2) and _tools(log) == ["a"]


@pytest.mark.anyio
async def test_a_fault_in_passing_journals_is_logged_once_and_never_ends_the_gateway(
    log: AuditLog, journal: Journal, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    def broken(*_: object) -> None:
        raise RuntimeError("a fault nobody foresaw")

    async with anyio.create_task_group() as tg:
        with monkeypatch.context() as patch:
            patch.setattr(Journal, "seal", broken)
            tg.start_soon(journal.run)
            journal.write([Record("tools/call", tool="a")], [None])
            await anyio.sleep(0.3)  # several rounds, each failing
        assert caplog.text.count("passing journals to the chainer failed") == 1 and _tools(log) == []
        await anyio.sleep(0.3)  # the same task, now that sealing works
        assert _tools(log) == ["a"]
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_chainer_killed_is_started_again_and_given_what_it_held(
    log: AuditLog, journal: Journal, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    monkeypatch.setattr(journal_module, "RESTART_EVERY_S", 0.1)
    told: list[int] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(journal.run)
        journal.write([Record("tools/call", tool="a")], [told.append])
        assert await journal.chain_now()
        first = journal._chainer
        assert first is not None
        first.process.send_signal(signal.SIGSTOP)  # stopped, so that it holds the next journal unchained...
        journal.write([Record("tools/call", tool="b")], [told.append])
        assert journal.seal() and journal.behind == 1
        first.process.kill()  # ...and dies holding it
        with anyio.fail_after(5):
            while journal.behind:
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    assert journal._chainer is not first and "the chainer process ended (exit code -9)" in caplog.text
    assert _tools(log) == ["a", "b"] and told == [1, 2] and log.verify() == (2, [])


# A gateway in miniature with its chainer: keeps and passes records, then dies without a word.
_KILLED_WITH_CHAINER = """
import os, signal, sys, anyio
from pathlib import Path
from bosun.audit.journal import Journal
from bosun.audit.log import AuditLog, Record
async def main():
    journal = Journal(AuditLog(Path(sys.argv[1])))
    journal.write([Record("tools/call", tool="passed")], [None])
    assert await journal.chain_now()
    journal.write([Record("tools/call", tool="sealed")], [None])
    assert journal.seal()  # passed, perhaps not chained yet
    journal.write([Record("tools/call", tool="kept")], [None])  # written, not passed
    print(journal._chainer.process.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
anyio.run(main)
"""


def test_a_killed_gateways_chainer_chains_what_it_was_given_and_ends(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    done = subprocess.run([sys.executable, "-c", _KILLED_WITH_CHAINER, str(db)], capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr
    chainer = int(done.stdout)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{chainer}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # reparented: not ours to reap, but gone once it exits
    assert not Path(f"/proc/{chainer}").exists(), "the chainer outlived its gateway"
    log = AuditLog(db)
    assert _tools(log)[:2] == ["passed", "sealed"]
    assert settle(log) and _tools(log) == ["passed", "sealed", "kept"] and log.verify() == (3, [])


@pytest.mark.anyio
async def test_a_journal_the_chainer_cannot_read_is_named_and_left_in_place(
    log: AuditLog, journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:  # fmt: skip
    journal.write([Record("tools/call", tool="a")], [None])
    (kept,) = log.journal_dir.glob("*.jsonl")
    with kept.open("ab") as f:
        f.write(b'{"not": "a record"}\n')  # as a disk that lost a block would show it
    assert await journal.chain_now()  # nothing waits for it any more...
    assert kept.exists() and _tools(log) == []  # ...and it stays, for a person
    assert f"the journal {kept} could not be chained (line 3 is not an audit record)" in caplog.text


@pytest.mark.anyio
async def test_a_record_comes_out_of_the_journal_as_it_went_in(log: AuditLog, journal: Journal) -> None:
    sent = Record("tools/call", agent="ünïcode", tool="naïve", reason='a "quoted"\nline', duration_ms=0.1,
                  detail={"args": {"n": "int:3"}, "ratio": 1e-7, "big": 2**53 + 1, "ok": False, "none": None},
                  ts="2026-11-25T00:00:00.000001+00:00")  # fmt: skip
    journal.write([sent], [None])
    assert await journal.chain_now()
    (got,) = log.records()
    assert (got.agent, got.tool, got.reason, got.duration_ms, got.detail, got.ts) == (
        sent.agent, sent.tool, sent.reason, sent.duration_ms, sent.detail, sent.ts,
    )  # fmt: skip
    assert log.verify() == (1, [])


@pytest.mark.anyio
async def test_a_chainer_that_cannot_start_fails_closed_in_time_naming_why(
    log: AuditLog, journal: Journal, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    monkeypatch.setattr(journal_module, "CHAIN_LAG_MAX_S", 0.2)
    monkeypatch.setattr(journal_module, "RESTART_EVERY_S", 0.05)
    with monkeypatch.context() as patch:
        patch.setattr(sys, "executable", str(log.path.parent / "no-python"))
        journal.write([Record("tools/call", tool="a")], [None])
        assert not await journal.chain_now(timeout_s=0.3)  # calls go on meanwhile...
        with pytest.raises(AuditBehind, match="no chainer process"):
            journal.write([Record("tools/call", tool="b")], [None])  # ...until the audit is too far behind
    assert "could not start the chainer process" in caplog.text
    await anyio.sleep(0.05)
    assert await journal.chain_now() and _tools(log) == ["a"]  # started once it can be
    journal.write([Record("tools/call", tool="c")], [None])
    assert await journal.chain_now() and _tools(log) == ["a", "c"]
