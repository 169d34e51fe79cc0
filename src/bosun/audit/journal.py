"""The gateway's audit records, written ahead of the chain.

A request's record must be kept before its answer leaves. Committing it to the hash chain there and then
(SQLite's write lock, the chain's head, the hash, the WAL write: eight system calls a transaction) was
most of what governance added to a call, on the gateway's one busy core, and a transaction waited for any
other process holding the write lock. So a request's record is written to the gateway's journal instead,
one line of JSON, with the records of its loop turn in one ``write``; every 50 ms (or ``SEAL_AT`` records)
the journal is sealed and passed to the gateway's chainer process (``bosun.audit.chainer``), which chains
its records into the audit database in one transaction and removes it.

Written is kept: a ``write`` to a file outlives the death of the process that made it (even ``kill -9``),
exactly as a committed WAL transaction with ``synchronous=NORMAL`` does (neither waits for the disk). A
journal left by a gateway (or chainer) that died is chained by the next gateway to start on this home, or
by the next ``bosun audit`` command; readers in other processes wait for the live journals to be chained
first (``settle``). A journal is chained whole or not at all, in one transaction that also marks its name
as chained, so a journal found again after a crash is never chained twice.

Files: ``BOSUN_HOME/audit.journal/<time>-<pid>-<random>.jsonl``: a header naming the fields, then one
line per record (its fields but its place and hashes), each locked (``flock``) by the gateway writing it,
then by the chainer chaining it, so others can tell a live journal from one left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import operator
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pydantic_core

from bosun.audit.log import AuditLog, Record

log = logging.getLogger(__name__)

INGEST_EVERY_S = 0.05  # the longest a kept record waits to be passed to the chainer
SEAL_AT = 1000  # ...or until this many wait: one transaction's worth
_RETRY_S = 0.01  # a journal due but not taken (the chainer far behind, or a fault) is offered again this often
_RECHECK_S = 0.1  # while journals passed are unanswered: how often a chainer gone or an answer lost is noticed
RESTART_EVERY_S = 1.0  # a chainer that ended is started again, at most this often
STOP_WAIT_S = 2.0  # for the chainer to end once told to, before it is killed
UNANSWERED_S = 5.0  # a journal passed this long ago, gone, and not answered for, was chained
# Records kept but not chained for this long stop the gateway taking calls: an audit that cannot be chained
# fails closed, as a commit that failed did, rather than piling up records no reader sees.
CHAIN_LAG_MAX_S = 30.0
SUFFIX = ".jsonl"
_MAX_MESSAGE = 65536
# A line is a JSON array of these fields, in this order (the rest, a record's place and hashes, come with
# the chain). An array, not an object: encoding it is a third cheaper, in the request's path.
_SENT = tuple(f.name for f in dataclasses.fields(Record) if f.name not in ("seq", "prev", "hash"))
_SENT_BUT_TS = operator.attrgetter(*_SENT[:-1])  # a record's fields read in C, not a getattr a field (2x)
# A journal's first line names its fields, so that one left by a gateway of another version is read by name.
_DEFAULTS = Record("").payload()
_HEADER = pydantic_core.to_json({"bosun_audit_journal": 1, "fields": list(_SENT)}) + b"\n"

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
    count: int = 0
    chained: list[Chained | None] = dataclasses.field(default_factory=list)  # of each record


class _ChainerProcess:
    """The gateway's end of its chainer process: journals go to it as open files, answers come back."""

    def __init__(self, db: Path) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            argv = [sys.executable, "-m", "bosun.audit.chainer", str(db), str(theirs.fileno())]
            # Not the gateway's stdout, which may be its MCP stream; its stderr, which is the gateway's log.
            self.process = subprocess.Popen(argv, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL)  # fmt: skip
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self.socket = ours
        self.ended = False  # its end of the socket is closed: it exited, or is about to
        self._watching: asyncio.AbstractEventLoop | None = None

    @property
    def alive(self) -> bool:
        return not self.ended and self.process.poll() is None

    def give(self, name: str, fd: int) -> bool:
        """Pass a sealed journal; False if the chainer cannot take it now (it is gone, or far behind)."""
        try:
            socket.send_fds(self.socket, [name.encode()], [fd])
        except BlockingIOError:
            return False
        except OSError:
            self.ended = True
            return False
        return True

    def watch(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (from the running event loop) whenever it has something to say, or has ended."""
        if self._watching is None and not self.ended:
            self._watching = asyncio.get_running_loop()
            self._watching.add_reader(self.socket.fileno(), wake)

    def answers(self) -> list[dict[str, Any]]:
        """What it said since last asked."""
        said: list[dict[str, Any]] = []
        while True:
            try:
                data = self.socket.recv(_MAX_MESSAGE)
            except BlockingIOError:
                return said
            except OSError:
                data = b""
            if not data:
                self.ended = True
                self._unwatch()  # an ended socket is always readable: watched, it would wake the loop each turn
                return said
            said.append(json.loads(data))

    def close(self) -> None:
        self._unwatch()
        self.socket.close()

    def _unwatch(self) -> None:
        if self._watching is not None:
            self._watching.remove_reader(self.socket.fileno())
            self._watching = None

    async def stop(self) -> None:
        """Shut its socket for sending, which ends it once it has chained what it holds (its answers can still
        be read); killed after ``STOP_WAIT_S``."""
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_WR)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await anyio.to_thread.run_sync(self.process.wait, STOP_WAIT_S)
        self.end()

    def end(self) -> int:
        """Its exit code, once it is gone: killed if it is not yet. What it held is unlocked then, for the next
        gateway or `bosun audit` command to chain."""
        if self.process.poll() is None:
            self.process.kill()
        self.ended = True
        return self.process.wait()


class Journal:
    """One gateway's records ahead of the chain: ``write`` keeps them, its chainer process chains them."""

    def __init__(self, audit: AuditLog) -> None:
        self.directory = audit.journal_dir
        self.directory.mkdir(mode=0o700, exist_ok=True)
        self._db = audit.path
        self._chainer: _ChainerProcess | None = None
        self._started = -math.inf  # when the last chainer was started
        self._file: _File | None = None  # opened by the first write after each sealing
        self._passed: dict[str, _File] = {}  # passed to the chainer, not yet chained, oldest first
        self._failing: str | None = None  # why chaining fails, while it does
        self._wake = asyncio.Event()  # for ``run``: a journal was started or filled, or the chainer spoke

    def _open(self) -> _File:
        # Created and locked under a temporary name, then renamed: another process must never find this
        # journal's final name unlocked and take it for one left behind. Readable too: the chainer reads it
        # through this same open file, whose lock it holds then.
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
        path = self.directory / (name + SUFFIX)
        temporary = self.directory / (name + ".tmp")
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, _HEADER)
        os.rename(temporary, path)
        return _File(name, path, fd, size=len(_HEADER))

    def write(self, records: list[Record], chained: list[Chained | None]) -> None:
        """Keep records, in order, in one write; ``chained[i]`` (if any) is told record i's place in the
        chain once it is chained. Raises OSError if they could not be kept (then none of them was), and
        AuditBehind, keeping none, while records kept ``CHAIN_LAG_MAX_S`` ago are still not chained."""
        oldest = next(iter(self._passed.values()), self._file)  # holds the oldest record not yet chained
        if oldest is not None and time.monotonic() - oldest.opened > CHAIN_LAG_MAX_S:
            raise AuditBehind(f"the audit has not chained its records for over {CHAIN_LAG_MAX_S:g}s "
                              f"({self._failing or 'no error yet'}); calls are refused until it can")  # fmt: skip
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        rows = [(*_SENT_BUT_TS(r), r.ts or now) for r in records]
        data = b"\n".join([pydantic_core.to_json(row) for row in rows]) + b"\n"  # a fifth of json's time
        current = self._file = self._file or self._open()
        try:
            written = os.write(current.fd, data)
            if written != len(data):
                raise OSError(f"the audit journal took {written} of {len(data)} bytes (is the disk full?)")
        except OSError:
            os.ftruncate(current.fd, current.size)  # no torn line for the next write to follow
            raise
        current.size += written
        current.count += len(records)
        current.chained += chained
        if current.count == len(records) or current.count >= SEAL_AT:
            self._wake.set()  # a journal to seal in time, or now

    def seal(self) -> bool:
        """Pass the journal written so far to the chainer; False if it cannot take it now (then the journal
        stays open for more, and is passed later)."""
        current = self._file
        if current is None:
            return True
        chainer = self._running()
        if chainer is None or not chainer.give(current.name, current.fd):
            return False
        os.close(current.fd)  # the lock stays with the chainer's copy of the open file
        self._passed[current.name] = current
        self._file = None
        return True

    @property
    def chainer_pid(self) -> int | None:
        """The chainer process, while one runs (its CPU is the audit's, too)."""
        return self._chainer.process.pid if self._chainer is not None and self._chainer.alive else None

    @property
    def behind(self) -> int:
        """Journals written and not yet chained."""
        return len(self._passed) + (self._file is not None)

    async def chain_now(self, timeout_s: float = 1.0) -> bool:
        """Seal, and wait until everything written is chained; False if that took longer than ``timeout_s``."""
        with anyio.move_on_after(timeout_s):
            while True:
                self._hear()
                if (self._file is None or self.seal()) and not self._passed:
                    return True
                await anyio.sleep(_RETRY_S / 10)
        return False

    async def run(self) -> None:
        """Pass the journal to the chainer every ``INGEST_EVERY_S`` (or ``SEAL_AT`` records), starting it
        (again, if it ended) when needed, and take its answers, until cancelled. A fault here is logged once
        and never ends the gateway: what stays unchained is refused in time (``write``)."""
        faulty = False
        while True:
            await self._idle()
            try:
                self._hear()
                if self._passed:
                    self._running()  # started again if it ended holding journals (else at the next sealing)
                current = self._file
                if current is not None and (
                    current.count >= SEAL_AT or time.monotonic() - current.opened >= INGEST_EVERY_S
                ):
                    self.seal()
                faulty = False
            except Exception as e:
                if not faulty:
                    log.exception("audit: passing journals to the chainer failed; trying again")
                faulty, self._failing = True, f"{type(e).__name__}: {e}"

    async def _idle(self) -> None:
        """Wait for ``run``'s next turn: the open journal due for sealing, the chainer saying something, or
        (while journals passed are unanswered) a look at whether it is still there. Woken by what happens,
        not a ticking timer, an idle gateway takes no CPU here: a 10 ms tick cost 14 ms of CPU a second."""
        current = self._file
        if current is not None:
            timeout: float | None = max(current.opened + INGEST_EVERY_S - time.monotonic(), _RETRY_S)
        else:
            timeout = _RECHECK_S if self._passed else None
        if self._chainer is not None:
            self._chainer.watch(self._wake.set)
        with anyio.move_on_after(timeout):
            await self._wake.wait()
        self._wake.clear()

    def _running(self) -> _ChainerProcess | None:
        """The chainer, started (again) if it is not running; None while it cannot be."""
        chainer = self._chainer
        if chainer is not None and chainer.alive:
            return chainer
        if time.monotonic() - self._started < RESTART_EVERY_S:
            return None
        self._started = time.monotonic()
        if chainer is not None:
            self._hear()  # its last words
            chainer.close()
            log.warning("audit: the chainer process ended (exit code %s); starting another", chainer.end())
        try:
            chainer = self._chainer = _ChainerProcess(self._db)
        except OSError as e:
            log.error("audit: could not start the chainer process (%s); trying again", e)
            self._chainer, self._failing = None, f"no chainer process: {e}"
            return None
        self._pass_again(chainer)
        return chainer

    def _pass_again(self, chainer: _ChainerProcess) -> None:
        """Pass what an ended chainer held to its successor: each journal still there, and unlocked."""
        for name, passed in list(self._passed.items()):
            try:
                fd = os.open(passed.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                del self._passed[name]  # chained after all (its places are not known here)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_nlink == 0:
                    del self._passed[name]
                elif not chainer.give(name, fd):
                    return
            except BlockingIOError:
                del self._passed[name]  # another process is chaining it
            finally:
                os.close(fd)

    def _hear(self) -> None:
        """Take the chainer's answers: tell each chained record's ``chained`` its place."""
        if self._chainer is None:
            return
        for said in self._chainer.answers():
            if "chained" in said:
                passed = self._passed.pop(said["chained"], None)
                if self._failing is not None:
                    log.warning("audit: chaining works again")
                self._failing = None
                first = int(said["first"])
                if passed is not None and first:
                    for place, then in enumerate(passed.chained, first):
                        if then is not None:
                            then(place)
            elif "failing" in said:
                log.warning("audit: could not chain journaled records yet (%s); trying again", said["failing"])
                self._failing = str(said["failing"])
            elif "unreadable" in said:
                passed = self._passed.pop(said["unreadable"], None)
                log.error("audit: the journal %s could not be chained (%s); it stays in place",
                          passed.path if passed else said["unreadable"], said.get("error"))  # fmt: skip
        for name, passed in list(self._passed.items()):
            # An answer lost (a chainer that died between chaining and saying so, or one that could not say
            # it): a journal passed a while ago and gone was chained, at places not known here.
            if time.monotonic() - passed.opened < UNANSWERED_S or passed.path.exists():
                break
            del self._passed[name]

    async def aclose(self, timeout_s: float = 10) -> None:
        """Chain everything written, and stop the chainer. What cannot be chained within ``timeout_s`` stays
        in its journal, for the next gateway or ``bosun audit`` command."""
        with anyio.CancelScope(shield=True):
            await self.chain_now(timeout_s)
            if self._chainer is not None:
                await self._chainer.stop()
                self._hear()
                self._chainer.close()
        if self._file is not None:
            os.close(self._file.fd)
        for left in [*self._passed.values(), *([self._file] if self._file else [])]:
            log.error("audit: %d record(s) stay in %s, to be chained by the next gateway or `bosun audit`",
                      left.count, left.path)  # fmt: skip
        self._file = None


def recover(audit: AuditLog) -> int:
    """Chain the journals left by gateways that are gone; returns how many records that chained."""
    directory = audit.journal_dir
    if not directory.is_dir():
        return 0
    chained = 0
    for path in sorted(directory.glob("*" + SUFFIX)):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # chained meanwhile by its gateway, or by another recovery
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its gateway (or that gateway's chainer) is alive and holds it
            if os.fstat(fd).st_nlink == 0:
                continue  # removed while this waited: it was chained
            payloads = read_journal(fd, path)
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
    on_disk = {path.stem for path in directory.glob("*" + SUFFIX)}
    audit.forget_journals(audit.journals() - on_disk)
    return chained


def read_journal(fd: int, path: Path) -> list[dict[str, Any]]:
    """The records of the journal open as ``fd`` (from its start, wherever the file's offset is)."""
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0)
    lines = data.split(b"\n")
    if lines[-1]:
        # Only the last line can be cut short, by a gateway dying in the middle of its write: that write's
        # requests were never answered.
        log.warning("audit: the last line of %s was cut short (%d bytes); it is left out", path.name, len(lines[-1]))
    fields = _fields(lines[0] if len(lines) > 1 else b"")
    payloads = []
    for number, line in enumerate(lines[1:-1], 2):
        row = pydantic_core.from_json(line)  # a third of json.loads' time, a line; the chainer reads every one
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


def _payload(row: list[Any], fields: Sequence[str]) -> dict[str, Any]:
    """A journal row as the chain takes it (``Record.payload()``, with its time); fields the row lacks (it
    was written by an older gateway) take their defaults."""
    return _DEFAULTS | dict(zip(fields, row, strict=True))


def settle(audit: AuditLog, timeout_s: float = 5) -> bool:
    """Chain what gateways that are gone left, and wait until the live ones have chained what they have
    written: then a reader sees every request answered so far. False if that took longer than ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        recover(audit)
        if not any(_live(p) for p in audit.journal_dir.glob("*" + SUFFIX)):
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
