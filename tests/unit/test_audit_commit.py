"""The committer: the records of one event-loop turn in one transaction, each submitter told its place."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bosun.audit.commit import Committer
from bosun.audit.log import Anchor, AuditLog, Record

pytestmark = pytest.mark.anyio


class Counting:
    """A real audit log that counts its transactions."""

    def __init__(self, path: Path) -> None:
        self.log = AuditLog(path)
        self.batches: list[int] = []

    def append_all(self, records: list[Record]) -> list[Anchor]:
        self.batches.append(len(records))
        return self.log.append_all(records)


async def test_records_of_one_turn_share_a_transaction_and_keep_their_order(tmp_path: Path) -> None:
    log = Counting(tmp_path / "audit.db")
    committer = Committer(log)
    anchors = await asyncio.gather(*(committer.submit(Record("tools/call", tool=f"t{i}")) for i in range(5)))
    assert log.batches == [5]
    assert [a.seq for a in anchors] == [1, 2, 3, 4, 5]
    assert [r.tool for r in log.log.records()] == ["t0", "t1", "t2", "t3", "t4"]
    assert await committer.submit(Record("tools/call", tool="next")) == log.log.head()
    assert log.batches == [5, 1]
    assert log.log.verify() == (6, [])


async def test_a_failed_commit_fails_every_request_in_it(tmp_path: Path) -> None:
    log = Counting(tmp_path / "audit.db")
    log.log.close()  # the database is gone from under the gateway
    committer = Committer(log)
    first, second = committer.submit(Record("tools/call")), committer.submit(Record("tools/call"))
    for committed in (first, second):
        with pytest.raises(Exception, match="closed"):
            await committed


async def test_a_cancelled_request_still_has_its_record_committed(tmp_path: Path) -> None:
    log = Counting(tmp_path / "audit.db")
    committer = Committer(log)
    gone = committer.submit(Record("tools/call", tool="gone"))
    kept = committer.submit(Record("tools/call", tool="kept"))
    gone.cancel()  # its request was cancelled while it waited
    assert (await kept).seq == 2
    assert [r.tool for r in log.log.records()] == ["gone", "kept"]


async def test_flush_commits_at_once_and_the_scheduled_flush_then_has_nothing(tmp_path: Path) -> None:
    log = Counting(tmp_path / "audit.db")
    committer = Committer(log)
    committed = committer.submit(Record("tools/call"))
    committer.flush()  # as the gateway does on exit, and for a request cancelled while it waited
    assert committed.done()
    assert committed.result().seq == 1
    await asyncio.sleep(0)  # the flush scheduled by submit runs, and finds nothing
    assert log.batches == [1]
