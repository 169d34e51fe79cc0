"""The gateway's audit records, written ahead of the chain.

A request's record must be kept before its answer leaves. Committing it to the hash chain there and then
(SQLite's write lock, the chain's head, the hash, the WAL write: eight system calls a transaction) was
most of what governance added to a call, on the gateway's one busy core, and a transaction waited for any
other process holding the write lock. So a request's record is written to the gateway's journal instead,
one line of JSON, with the records of its loop turn in one ``write``; every few dozen records or 50 ms the
journal is sealed and its records are chained into the audit database in one transaction.

Written is kept: a ``write`` to a file outlives the death of the process that made it (even ``kill -9``),
exactly as a committed WAL transaction with ``synchronous=NORMAL`` does (neither waits for the disk). A
journal left by a gateway that died is chained by the next gateway to start on this home, or by the next
``bosun audit`` command; readers in other processes wait for the live journals to be chained first
(``settle``). A journal is chained whole or not at all, in one transaction that also marks its name as
chained, so a journal found again after a crash is never chained twice.

Files: ``BOSUN_HOME/audit.journal/<time>-<pid>-<random>.jsonl``: a header naming the fields, then one
line per record (its fields but its place and hashes), each locked (``flock``) by the gateway writing
it, so others can tell a live journal from one left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from bosun.audit.log import AuditLog, Record

log = logging.getLogger(__name__)

INGEST_EVERY_S = 0.05  # the longest a kept record waits to be chained
# ...or until this many wait: chaining holds up the event loop (about 20 us a record), so in small batches,
# each well under a millisecond, rather than one long pause every INGEST_EVERY_S under load.
SEAL_AT = 32
# About SQLite's own automatic checkpoint (1000 pages of WAL) in records of ours.
CHECKPOINT_EVERY = 5000
_TICK_S = 0.01
# The gateway's own chaining waits at most this long for another process's write lock, then tries again
# INGEST_EVERY_S later: the event loop it runs on serves every request meanwhile.
INGEST_BUSY_S = 0.005
# Records kept but not chained for this long stop the gateway taking calls: an audit that cannot be chained
# fails closed, as a commit that failed did, rather than piling up records no reader sees.
CHAIN_LAG_MAX_S = 30.0
_SUFFIX = ".jsonl"
# A line is a JSON array of these fields, in this order (the rest, a record's place and hashes, come with
# the chain). An array, not an object: encoding it is a third cheaper, in the request's path.
_SENT = tuple(f.name for f in dataclasses.fields(Record) if f.name not in ("seq", "prev", "hash"))
_LINE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # its own: json.dumps builds one per call
# A journal's first line names its fields, so that one left by a gateway of another version is read by name.
_DEFAULTS = Record("").payload()
_HEADER = (_LINE.encode({"bosun_audit_journal": 1, "fields": list(_SENT)}) + "\n").encode()

Chained = Callable[[int], None]  # told a record's place in the chain


class AuditBehind(RuntimeError):
    """Records kept long ago are still not chained: the gateway refuses calls it could not audit."""


@dataclasses.dataclass
class _File:
    name: str
    path: Path
    fd: int
    opened: float = dataclasses.field(default_factory=time.monotonic)
    size: int = 0
    rows: list[list[Any]] = dataclasses.field(default_factory=list)  # each record's ``_SENT`` values
    chained: list[Chained | None] = dataclasses.field(default_factory=list)


class Journal:
    """One gateway's records ahead of the chain: ``write`` keeps them, ``ingest`` chains them."""

    def __init__(self, audit: AuditLog) -> None:
        self.directory = audit.journal_dir
        self.directory.mkdir(mode=0o700, exist_ok=True)
        # Its commits never checkpoint: a checkpoint (copying the WAL into the database, with fsyncs) took
        # up to 9 ms on this machine, every few thousand records, with the event loop held; ``run`` has it
        # done in a thread instead.
        self._log = AuditLog(audit.path, busy_timeout_s=INGEST_BUSY_S, autocheckpoint=False)
        self._uncheckpointed = 0  # records chained since the last checkpoint
        self._file: _File | None = None  # opened by the first write after each sealing
        self._sealed: list[_File] = []  # written, not yet chained, oldest first
        self._gone: list[str] = []  # chained and removed: their marks can go
        self._failing: str | None = None  # why chaining fails, while it does
        self._unchained_since: float | None = None  # when the oldest record not yet chained was written

    def _open(self) -> _File:
        # Created and locked under a temporary name, then renamed: another process must never find this
        # journal's final name unlocked and take it for one left behind.
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
        path = self.directory / (name + _SUFFIX)
        temporary = self.directory / (name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, _HEADER)
        os.rename(temporary, path)
        return _File(name, path, fd, size=len(_HEADER))

    def write(self, records: list[Record], chained: list[Chained | None]) -> None:
        """Keep records, in order, in one write; ``chained[i]`` (if any) is told record i's place in the
        chain once it is chained. Raises OSError if they could not be kept (then none of them was), and
        AuditBehind, keeping none, while records kept ``CHAIN_LAG_MAX_S`` ago are still not chained."""
        if self._unchained_since is not None and time.monotonic() - self._unchained_since > CHAIN_LAG_MAX_S:
            raise AuditBehind(f"the audit has not chained its records for over {CHAIN_LAG_MAX_S:g}s "
                              f"({self._failing or 'no error yet'}); calls are refused until it can")  # fmt: skip
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        rows = [[*[getattr(r, name) for name in _SENT[:-1]], r.ts or now] for r in records]
        data = ("\n".join([_LINE.encode(row) for row in rows]) + "\n").encode()
        current = self._file = self._file or self._open()
        try:
            written = os.write(current.fd, data)
            if written != len(data):
                raise OSError(f"the audit journal took {written} of {len(data)} bytes (is the disk full?)")
        except OSError:
            os.ftruncate(current.fd, current.size)  # no torn line for the next write to follow
            raise
        current.size += written
        if self._unchained_since is None:
            self._unchained_since = time.monotonic()
        current.rows += rows
        current.chained += chained

    def ingest(self) -> bool:
        """Seal the journal written so far and chain every sealed one, oldest first; True when none is left.
        A failure (another process holding the write lock too long, a full disk) leaves them for the
        next call, logged once."""
        if self._file is not None:
            self._sealed.append(self._file)
            self._file = None
        while self._sealed:
            sealed = self._sealed[0]
            try:
                anchors = self._log.ingest(sealed.name, [_payload(row) for row in sealed.rows])
                if self._gone:
                    self._log.forget_journals(self._gone)
                    self._gone.clear()
            except sqlite3.Error as e:
                if self._failing is None:
                    log.warning("audit: could not chain %d journaled record(s) yet (%s); trying again",
                                len(sealed.rows), e)  # fmt: skip
                self._failing = str(e)
                return False
            if self._failing is not None:
                log.warning("audit: chaining works again")
            self._failing = None
            self._sealed.pop(0)
            with contextlib.suppress(FileNotFoundError):  # chained, and marked: a copy found later is skipped
                os.unlink(sealed.path)
            os.close(sealed.fd)
            self._gone.append(sealed.name)
            self._uncheckpointed += len(sealed.rows)
            for then, anchor in zip(sealed.chained, anchors or [], strict=False):
                if then is not None:
                    then(anchor.seq)
        self._unchained_since = None
        return True

    async def run(self) -> None:
        """Chain what was written, every ``SEAL_AT`` records or ``INGEST_EVERY_S``, and checkpoint the WAL in a
        thread every ``CHECKPOINT_EVERY`` records chained, until cancelled."""
        retry_at = 0.0
        checkpointed = anyio.Event()
        checkpointed.set()
        async with anyio.create_task_group() as tg:
            while True:
                await anyio.sleep(_TICK_S)
                retry_at = self._round(retry_at)
                if self._uncheckpointed >= CHECKPOINT_EVERY and checkpointed.is_set():
                    self._uncheckpointed = 0
                    checkpointed = anyio.Event()
                    tg.start_soon(self._checkpoint, checkpointed)

    def _round(self, retry_at: float) -> float:
        """Chain what is due, unless a failure says to wait until ``retry_at``; returns the next such time."""
        now, current = time.monotonic(), self._file
        due = current is not None and (len(current.rows) >= SEAL_AT or now - current.opened >= INGEST_EVERY_S)
        if not (due or self._sealed) or now < retry_at:
            return retry_at
        try:
            chained = self.ingest()
        except Exception as e:  # never the gateway's end: what stays unchained is refused in time (write)
            if self._failing is None:
                log.exception("audit: chaining failed; trying again")
            self._failing = f"{type(e).__name__}: {e}"
            chained = False
        return 0.0 if chained else now + INGEST_EVERY_S

    async def _checkpoint(self, done: anyio.Event) -> None:
        try:
            await anyio.to_thread.run_sync(self._log.checkpoint)
        except sqlite3.Error as e:  # the next one copies what this one could not
            log.warning("audit: could not checkpoint the database's WAL (%s)", e)
        finally:
            done.set()

    async def aclose(self, timeout_s: float = 10) -> None:
        """Chain everything written. What cannot be chained within ``timeout_s`` stays in its journal, for
        the next gateway or ``bosun audit`` command."""
        with anyio.CancelScope(shield=True):
            for _ in range(max(1, round(timeout_s / INGEST_EVERY_S))):
                if self.ingest():
                    break
                await anyio.sleep(INGEST_EVERY_S)
        with contextlib.suppress(sqlite3.Error):
            self._log.forget_journals(self._gone)
        for left in self._sealed:
            os.close(left.fd)
            log.error("audit: %d record(s) stay in %s, to be chained by the next gateway or `bosun audit`",
                      len(left.rows), left.path)  # fmt: skip
        self._log.close()


def recover(audit: AuditLog) -> int:
    """Chain the journals left by gateways that are gone; returns how many records that chained."""
    directory = audit.journal_dir
    if not directory.is_dir():
        return 0
    chained = 0
    for path in sorted(directory.glob("*" + _SUFFIX)):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # chained meanwhile by its gateway, or by another recovery
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its gateway is alive and writing
            if os.fstat(fd).st_nlink == 0:
                continue  # removed while this waited: it was chained
            payloads = _read(fd, path)
            if audit.ingest(path.stem, payloads) is not None:
                chained += len(payloads)
                log.warning("audit: chained %d record(s) a gateway had journaled before it stopped (%s)",
                            len(payloads), path.name)  # fmt: skip
            os.unlink(path)
        except (ValueError, sqlite3.Error) as e:
            log.error("audit: the journal %s could not be chained (%s); it stays in place", path, e)
        finally:
            os.close(fd)
    for stale in directory.glob("*.tmp"):  # a gateway died between creating a journal and naming it: empty
        with contextlib.suppress(FileNotFoundError):
            if time.time() - stale.stat().st_mtime > 60:
                stale.unlink()
    on_disk = {path.stem for path in directory.glob("*" + _SUFFIX)}
    audit.forget_journals(audit.journals() - on_disk)
    return chained


def _read(fd: int, path: Path) -> list[dict[str, Any]]:
    with os.fdopen(os.dup(fd), "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines[-1]:
        # Only the last line can be cut short, by a gateway dying in the middle of its write: that write's
        # requests were never answered.
        log.warning("audit: the last line of %s was cut short (%d bytes); it is left out", path.name, len(lines[-1]))
    fields = _fields(lines[0] if len(lines) > 1 else b"")
    payloads = []
    for number, line in enumerate(lines[1:-1], 2):
        row = json.loads(line)
        if not isinstance(row, list) or len(row) != len(fields):
            raise ValueError(f"line {number} is not an audit record")
        payload = _payload(row, fields)
        if not isinstance(payload["detail"], dict):
            raise ValueError(f"line {number} is not an audit record")
        payloads.append(payload)
    return payloads


def _fields(header: bytes) -> list[str]:
    try:
        value = json.loads(header)
    except ValueError:
        value = None
    fields = value.get("fields") if isinstance(value, dict) and value.get("bosun_audit_journal") == 1 else None
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise ValueError("it does not start with an audit journal's header")
    unknown = sorted(set(fields) - set(_SENT))
    if unknown:  # dropped, they would be missing from the chain without a trace
        raise ValueError(f"its records have fields this version does not know ({', '.join(unknown)}); "
                         "chain it with the version that wrote it")  # fmt: skip
    return fields


def _payload(row: list[Any], fields: Sequence[str] = _SENT) -> dict[str, Any]:
    """A journal row as the chain takes it (``Record.payload()``, with its time); fields the row lacks (it
    was written by an older gateway) take their defaults."""
    return _DEFAULTS | dict(zip(fields, row, strict=True))


def settle(audit: AuditLog, timeout_s: float = 5) -> bool:
    """Chain what gateways that are gone left, and wait until the live ones have chained what they have
    written: then a reader sees every request answered so far. False if that took longer than ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        recover(audit)
        if not any(_live(p) for p in audit.journal_dir.glob("*" + _SUFFIX)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(INGEST_EVERY_S / 2)


def _live(path: Path) -> bool:
    """Whether a gateway holds this journal (one left behind that could not be chained is not waited for)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
