"""The audit chainer: the process that chains one gateway's sealed journals into the audit database.

Chaining a record (its canonical form, its hash, its row, a share of a transaction) is work nothing waits
for, but on the gateway's event loop it took about a tenth of the gateway's one busy core under load. In a
process of its own it runs on the machine's other core: with one message each way a journal (a few dozen
records), a gateway served 10 % more calls a second at 16 HTTP clients in an A/B here (4242 -> 4686,
medians of 4 rounds), for the same CPU a call in all.

The gateway passes each journal it seals as its open file, over a ``SOCK_SEQPACKET`` socket pair
(``SCM_RIGHTS``): the journal's ``flock`` belongs to that open file, so the journal stays locked, and
readers wait for it as for a live one (``settle``), until it is chained here and removed. Journals are
chained in the order they come. Each is answered with a JSON message:

- ``{"chained": name, "first": seq}``: chained from ``seq`` on (0 if it was found chained already);
- ``{"failing": why}``: chaining fails (another process has held the write lock too long, a full disk);
  it is tried again every ``RETRY_S``, and said once a streak;
- ``{"unreadable": name, "error": why}``: it could not be read; it stays in place, for a person.

When the gateway closes its end (its exit, or its death), what is left is chained, within ``FINISH_S``,
and the process ends; a journal still unchained then is unlocked with it, for the next gateway or
``bosun audit`` command to chain.

    python -m bosun.audit.chainer AUDIT_DB SOCKET_FD
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sqlite3
import sys
import time
from collections import deque
from pathlib import Path

from bosun.audit.journal import SUFFIX, read_journal
from bosun.audit.log import AuditLog

CHAIN_BUSY_S = 1.0  # the longest a transaction waits for another process's write lock, before a retry
RETRY_S = 0.05
FINISH_S = 10.0
TELL_WAIT_S = 5.0  # for a gateway that does not read its answers (it finds a journal gone by itself)
MAX_MESSAGE = 4096  # a journal's name, well within


class _Chainer:
    def __init__(self, audit: AuditLog, sock: socket.socket) -> None:
        self.audit = audit
        self.socket = sock
        self.queue: deque[tuple[str, int]] = deque()  # journals passed, not yet chained: name, open file
        self.open = True  # the gateway's end is open
        self.failing: str | None = None
        self.gone: list[str] = []  # chained and removed: their marks can go

    def receive(self, timeout_s: float | None) -> None:
        """Take what the gateway sent, waiting at most ``timeout_s`` (None: until something comes)."""
        ready, _, _ = select.select([self.socket], [], [], timeout_s)
        while ready and self.open:
            try:
                data, fds, _, _ = socket.recv_fds(self.socket, MAX_MESSAGE, 1)
            except BlockingIOError:
                return
            except ConnectionError:
                data, fds = b"", []
            if not data and not fds:
                self.open = False
                return
            name = data.decode(errors="replace")
            if fds and (not name or "/" in name or name.startswith(".")):  # not a journal's name: not ours to touch
                os.close(fds[0])
            elif fds:
                self.queue.append((name, fds[0]))

    def chain_next(self) -> bool:
        """Chain the oldest journal waiting; False if that failed (it stays first, for a retry)."""
        name, fd = self.queue[0]
        path = self.audit.journal_dir / (name + SUFFIX)
        try:
            payloads = read_journal(fd, path)
        except ValueError as e:
            self.queue.popleft()
            os.close(fd)
            self.tell({"unreadable": name, "error": str(e)})
            return True
        try:
            anchors = self.audit.ingest(name, payloads)
            if self.gone:
                self.audit.forget_journals(self.gone)
                self.gone.clear()
        except sqlite3.Error as e:
            if self.failing is None:
                self.tell({"failing": str(e)})
            self.failing = str(e)
            return False
        self.failing = None
        self.queue.popleft()
        with contextlib.suppress(FileNotFoundError):  # chained, and marked: a copy found later is skipped
            os.unlink(path)
        os.close(fd)
        self.gone.append(name)
        self.tell({"chained": name, "first": anchors[0].seq if anchors else 0})
        return True

    def tell(self, message: dict[str, object]) -> None:
        data = json.dumps(message).encode()
        deadline = time.monotonic() + TELL_WAIT_S
        while time.monotonic() < deadline:
            try:
                self.socket.send(data)
                return
            except BlockingIOError:  # the gateway is busy: it reads its answers every few ms
                select.select([], [self.socket], [], TELL_WAIT_S)
            except OSError:
                return  # a gateway that is gone is told nothing; the work goes on

    def run(self) -> None:
        retry_at = 0.0
        while self.open:
            now = time.monotonic()
            self.receive(None if not self.queue else max(0.0, retry_at - now))
            if self.queue and time.monotonic() >= retry_at:
                retry_at = 0.0 if self.chain_next() else time.monotonic() + RETRY_S
        deadline = time.monotonic() + FINISH_S
        while self.queue and time.monotonic() < deadline:
            if not self.chain_next():
                time.sleep(RETRY_S)
        with contextlib.suppress(sqlite3.Error):
            self.audit.forget_journals(self.gone)


def main(argv: list[str]) -> None:
    # A Ctrl-C at the terminal reaches the whole process group: it is for the gateway, which ends this
    # process by closing its socket, once what it passed is chained.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    db, sock = Path(argv[0]), socket.socket(fileno=int(argv[1]))
    sock.setblocking(False)  # waits are select's (Python 3.11's ``recv_fds`` drops its ``flags``)
    _Chainer(AuditLog(db, busy_timeout_s=CHAIN_BUSY_S), sock).run()


if __name__ == "__main__":
    main(sys.argv[1:])
