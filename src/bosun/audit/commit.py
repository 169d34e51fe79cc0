"""The gateway's records kept a loop turn at a time.

A request's record is kept before its answer leaves: its handler awaits it. The records of every
request finishing in the same turn of the event loop are kept together, in one write to the gateway's
journal (``bosun.audit.journal``), early in the next turn.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from bosun.audit.journal import Chained
from bosun.audit.log import Record


class Sink(Protocol):
    def write(self, records: list[Record], chained: list[Chained | None]) -> None: ...


class Committer:
    """Takes records from the gateway's requests and keeps each turn's together, in the order given."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._pending: list[tuple[Record, Chained | None, asyncio.Future[None]]] = []

    def submit(self, record: Record, chained: Chained | None = None) -> asyncio.Future[None]:
        """Done once the record is kept (this turn's batch, written next turn); ``chained`` gets its place in
        the chain later, once it is chained."""
        loop = asyncio.get_running_loop()
        kept: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            loop.call_soon(self.flush)
        self._pending.append((record, chained, kept))
        return kept

    def flush(self) -> None:
        """Keep every record submitted so far, now; each submitter's future is done, or gets the error."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self.sink.write([record for record, _, _ in batch], [chained for _, chained, _ in batch])
        except Exception as e:
            for _, _, kept in batch:
                if not kept.done():  # a request cancelled meanwhile no longer waits for it
                    kept.set_exception(e)
            return
        for _, _, kept in batch:
            if not kept.done():
                kept.set_result(None)
