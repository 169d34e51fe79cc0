"""The committer: the records of one event-loop turn kept in one write, each submitter told when."""

from __future__ import annotations

import asyncio

import pytest

from bosun.audit.commit import Committer
from bosun.audit.journal import Chained
from bosun.audit.log import Record

pytestmark = pytest.mark.anyio


class Sink:
    """Keeps what it is given, batch by batch; fails when told to."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.chained: list[Chained | None] = []
        self.fail: Exception | None = None

    def write(self, records: list[Record], chained: list[Chained | None]) -> None:
        if self.fail is not None:
            raise self.fail
        self.batches.append([r.tool for r in records])
        self.chained += chained


async def test_records_of_one_turn_are_written_together_and_in_order() -> None:
    sink = Sink()
    committer = Committer(sink)
    told: list[int] = []
    await asyncio.gather(*(committer.submit(Record("tools/call", tool=f"t{i}"), told.append) for i in range(5)))
    assert sink.batches == [["t0", "t1", "t2", "t3", "t4"]]
    await committer.submit(Record("tools/call", tool="next"))
    assert sink.batches == [["t0", "t1", "t2", "t3", "t4"], ["next"]]
    assert sink.chained[:5] == [told.append] * 5 and sink.chained[5] is None


async def test_a_failed_write_fails_every_request_in_it() -> None:
    sink = Sink()
    sink.fail = OSError("No space left on device")
    committer = Committer(sink)
    first, second = committer.submit(Record("tools/call")), committer.submit(Record("tools/call"))
    for kept in (first, second):
        with pytest.raises(OSError, match="No space"):
            await kept


async def test_a_cancelled_request_still_has_its_record_kept() -> None:
    sink = Sink()
    committer = Committer(sink)
    gone = committer.submit(Record("tools/call", tool="gone"))
    kept = committer.submit(Record("tools/call", tool="kept"))
    gone.cancel()  # its request was cancelled while it waited
    await kept
    assert sink.batches == [["gone", "kept"]]


async def test_flush_writes_at_once_and_the_scheduled_flush_then_has_nothing() -> None:
    sink = Sink()
    committer = Committer(sink)
    kept = committer.submit(Record("tools/call"))
    committer.flush()  # as the gateway does on exit, and for a request cancelled while it waited
    assert kept.done()
    await asyncio.sleep(0)  # the flush scheduled by submit runs, and finds nothing
    assert sink.batches == [[""]]
