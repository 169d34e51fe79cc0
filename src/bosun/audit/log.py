"""The tamper-evident audit: every request and decision, append-only, each record chained to the last.

Records live in SQLite (WAL), one row each, and carry ``hash = sha256(prev_hash, record)``. Triggers
refuse UPDATE and DELETE, and ``verify`` recomputes the chain, so a record edited, deleted or moved
by someone who bypasses the triggers is found and named. A committed WAL transaction survives the
death of the process that wrote it (even ``kill -9``). The gateway keeps its requests' records in a
journal first and chains them here in batches (``bosun.audit.journal``); the CLI and the console
append theirs directly.

Arguments and results are not stored: ``detail`` holds their shape (names, types, sizes), unless the
policy's ``audit.keep`` names the tool, and then only their redacted text, capped.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
_FIELDS = ("ts", "kind", "agent", "session", "server", "tool", "decision", "reason", "outcome", "duration_ms",
           "image", "detail")  # fmt: skip
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY, {", ".join(f"{f} TEXT" for f in _FIELDS)}, prev TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'the audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
    BEGIN SELECT RAISE(ABORT, 'the audit is append-only'); END;
CREATE TABLE IF NOT EXISTS journals (name TEXT PRIMARY KEY);
"""
_INSERT = f"INSERT INTO records (seq, {', '.join(_FIELDS)}, prev, hash) VALUES ({', '.join('?' * (len(_FIELDS) + 3))})"
_DETAIL = _FIELDS.index("detail")


@dataclass(frozen=True)
class Record:
    kind: str  # the MCP method: tools/call, tools/list, resources/read, prompts/get, ...
    agent: str = ""
    session: str = ""
    server: str = ""
    tool: str = ""
    decision: str = "allow"  # allow, deny, ask
    reason: str = ""
    outcome: str = "ok"  # ok, error, refused
    duration_ms: float = 0.0
    image: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    ts: str = ""
    seq: int = 0
    prev: str = ""
    hash: str = ""

    def payload(self) -> dict[str, Any]:
        # Plain attribute reads: asdict's deep copy was most of an append's cost, and the values are only read.
        return {k: getattr(self, k) for k in ("seq", *_FIELDS)}


# One encoder for every record: json.dumps given options builds a new encoder per call, which was a third
# of serialising a call's detail. Same class, same options, so the same text as json.dumps with them.
_COMPACT = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _compact(value: Any) -> str:
    return _COMPACT.encode(value)


_KEYS = sorted(("seq", *_FIELDS))
_BEFORE_DETAIL, _AFTER_DETAIL = _KEYS[: _KEYS.index("detail")], _KEYS[_KEYS.index("detail") + 1 :]


def _field(value: Any) -> str:
    """``_compact(value)`` for one field's value, without setting up the general encoder for each of a
    record's dozen fields (which was half of hashing a record)."""
    kind = type(value)
    if kind is str:
        return encode_basestring(value)  # json's own escaping, as with ensure_ascii=False
    if kind is int or (kind is float and math.isfinite(value)):
        return repr(value)  # json writes these as repr does
    return _compact(value)


def _digest(prev: str, payload: dict[str, Any], detail: str) -> str:
    """The hash of a record: over ``prev`` and ``_compact(payload)``, which is put together here field by
    field around ``detail``, the payload's detail already in compact form (it is stored so), so that an
    append serialises the detail once rather than twice."""
    before = ",".join([f'"{k}":{_field(payload[k])}' for k in _BEFORE_DETAIL])
    after = ",".join([f'"{k}":{_field(payload[k])}' for k in _AFTER_DETAIL])
    return hashlib.sha256(f'{prev}\n{{{before},"detail":{detail},{after}}}'.encode()).hexdigest()


def chain_hash(prev: str, record: Record) -> str:
    return _digest(prev, record.payload(), _compact(record.detail))


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> Anchor:
        seq, _, digest = text.partition(":")
        if not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{text!r} is not an anchor (SEQ:HASH, as `bosun audit anchor` prints)")
        return cls(int(seq), digest)


@dataclass(frozen=True)
class Problem:
    seq: int
    what: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.what}"


def _row_to_record(row: sqlite3.Row) -> Record:
    data = dict(row)
    data["detail"] = json.loads(data["detail"] or "{}")
    data["duration_ms"] = float(data["duration_ms"] or 0)
    return Record(**data)


class AuditLog:
    def __init__(self, path: Path, busy_timeout_s: float = 30) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), so two gateways on one home
        # each read the chain's head and append under the same write lock.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        path.chmod(0o600)

    @property
    def journal_dir(self) -> Path:
        """Where gateways write their records ahead of the chain (``bosun.audit.journal``)."""
        return self.path.with_suffix(".journal")

    def close(self) -> None:
        self._db.close()

    def append(self, record: Record) -> Anchor:
        """Commit one record at the head of the chain; returns its place and hash."""
        return self.append_all([record])[0]

    def append_all(self, records: Sequence[Record]) -> list[Anchor]:
        """Commit records at the head of the chain, in order, in one transaction; returns their places and
        hashes. The transaction's fixed cost (taking the write lock, reading the head, writing the WAL) is
        about half a lone record's, so records that are ready together are cheaper committed together."""
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        payloads = []
        for record in records:
            payload = record.payload()
            payload["ts"] = record.ts or now
            payloads.append(payload)
        anchors = self._commit(payloads)
        assert anchors is not None
        return anchors

    def ingest(self, journal: str, payloads: Sequence[dict[str, Any]]) -> list[Anchor] | None:
        """Commit a journal's records (``Record.payload()`` each, with its time) at the head of the chain,
        and mark the journal as chained, in one transaction; None if it was chained already."""
        return self._commit(payloads, journal)

    def _commit(self, payloads: Sequence[dict[str, Any]], journal: str | None = None) -> list[Anchor] | None:
        # Everything that does not need the chain's head is done before taking the write lock, which
        # every gateway on this home waits for.
        ready = []
        for payload in payloads:
            detail = _compact(payload["detail"])
            values = [payload[f] for f in _FIELDS]
            values[_DETAIL] = detail
            ready.append((payload, detail, values))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if journal is not None:
                if self._db.execute("SELECT 1 FROM journals WHERE name = ?", (journal,)).fetchone():
                    self._db.execute("ROLLBACK")
                    return None
                self._db.execute("INSERT INTO journals (name) VALUES (?)", (journal,))
            head = self._db.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (head[0], head[1]) if head else (0, GENESIS)
            rows, anchors = [], []
            for payload, detail, values in ready:
                seq += 1
                payload["seq"] = seq
                digest = _digest(prev, payload, detail)
                rows.append([seq, *values, prev, digest])
                anchors.append(Anchor(seq, digest))
                prev = digest
            self._db.executemany(_INSERT, rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return anchors

    def journals(self) -> set[str]:
        """The journals marked as chained."""
        return {row[0] for row in self._db.execute("SELECT name FROM journals")}

    def forget_journals(self, names: Iterable[str]) -> None:
        """Drop the marks of journals whose files are gone: nothing can chain them twice any more."""
        self._db.executemany("DELETE FROM journals WHERE name = ?", [(name,) for name in names])

    def records(self, after: int = 0, limit: int | None = None) -> list[Record]:
        sql = "SELECT * FROM records WHERE seq > ? ORDER BY seq"
        rows = self._db.execute(sql + (f" LIMIT {int(limit)}" if limit else ""), (after,)).fetchall()
        return [_row_to_record(r) for r in rows]

    def last(self, n: int) -> list[Record]:
        rows = self._db.execute("SELECT * FROM records ORDER BY seq DESC LIMIT ?", (n,)).fetchall()
        return [_row_to_record(r) for r in reversed(rows)]

    def find(self, equal: dict[str, str], after: int = 0, limit: int = 100) -> list[Record]:
        """The newest ``limit`` records after ``after`` whose fields equal the given values (empty ones are
        ignored), oldest first."""
        wanted = {k: v for k, v in equal.items() if v}
        unknown = set(wanted) - set(_FIELDS)
        if unknown:
            raise ValueError(f"no such audit field: {', '.join(sorted(unknown))}")
        where = " AND ".join(["seq > ?", *(f"{k} = ?" for k in wanted)])
        sql = f"SELECT * FROM records WHERE {where} ORDER BY seq DESC LIMIT ?"
        rows = self._db.execute(sql, (after, *wanted.values(), limit)).fetchall()
        return [_row_to_record(r) for r in reversed(rows)]

    def get(self, seq: int) -> Record | None:
        row = self._db.execute("SELECT * FROM records WHERE seq = ?", (seq,)).fetchone()
        return _row_to_record(row) if row else None

    def last_seen(self) -> dict[str, str]:
        """Each agent's newest record time."""
        return dict(self._db.execute("SELECT agent, MAX(ts) FROM records GROUP BY agent").fetchall())

    def follow(self, after: int, poll_s: float = 0.5) -> Iterator[Record]:
        """Records as they are appended (by this or any other process), forever."""
        while True:
            batch = self.records(after, 500)
            yield from batch
            if batch:
                after = batch[-1].seq
            else:
                time.sleep(poll_s)

    def head(self) -> Anchor | None:
        """The newest record's place and hash: publish it elsewhere to catch a later truncation."""
        row = self._db.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        return Anchor(row["seq"], row["hash"]) if row else None

    def verify(self, anchors: Iterable[Anchor] = ()) -> tuple[int, list[Problem]]:
        """Walk the whole chain; returns how many records were checked and every problem found.

        The chain alone cannot show that its newest records were removed; an anchor (a head
        published earlier) can: the record it names must still be there, with the same hash."""
        problems: list[Problem] = []
        for anchor in anchors:
            row = self._db.execute("SELECT hash FROM records WHERE seq = ?", (anchor.seq,)).fetchone()
            if row is None:
                problems.append(Problem(anchor.seq, "anchored, but gone: the audit was truncated or replaced"))
            elif row["hash"] != anchor.hash:
                problems.append(Problem(anchor.seq, "its hash differs from its anchor: the audit was rewritten"))
        expected_seq, prev = 1, GENESIS
        count = 0
        for row in self._db.execute("SELECT * FROM records ORDER BY seq"):
            record = _row_to_record(row)
            count += 1
            gap = record.seq != expected_seq
            if gap:
                span = f"{expected_seq}" if record.seq == expected_seq + 1 else f"{expected_seq}-{record.seq - 1}"
                problems.append(Problem(record.seq, f"record(s) {span} before it are missing (deleted)"))
            if chain_hash(record.prev, record) != record.hash:
                problems.append(Problem(record.seq, "its content does not match its hash (edited, or moved here)"))
            elif record.prev != prev and not gap:
                problems.append(Problem(record.seq, "it does not follow the record before it (reordered or removed)"))
            expected_seq, prev = record.seq + 1, record.hash
        return count, problems


def shape(arguments: dict[str, Any]) -> dict[str, str]:
    """What the audit keeps of arguments: each name with its type and size, never its value."""
    out = {}
    for name, value in arguments.items():
        size = len(value) if isinstance(value, (str, list, dict)) else len(json.dumps(value))
        out[str(name)[:64]] = f"{type(value).__name__}:{size}"
    return out
