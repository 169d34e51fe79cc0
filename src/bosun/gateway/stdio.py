"""The gateway's stdio transport: newline-delimited JSON-RPC on the event loop's own pipes.

The SDK's ``stdio_server`` reads and writes through thread-wrapped files, so every message
costs a hop to a worker thread and back; profiled under load that was about a seventh of the
stdio gateway's busy time. When stdin and stdout are pipes, sockets or terminals (what an MCP
client gives a child), this transport reads and writes them with asyncio's non-blocking pipe
transports instead; anything else (a regular file, say) is read in a worker thread as before.
When both are one socket (a connection handed to the gateway, as ``bosun sandbox`` does), it is
served as a socket: a write pipe transport on it would take the next incoming message for the
peer hanging up.

Like the SDK's, it takes fds 0 and 1 for itself while serving and points them at the null
device and at stderr, so a stray ``print`` in a library cannot corrupt the wire.

A ``Shortcut`` may answer some messages itself before they reach the SDK (the gateway's lane for
tool calls): it is shown each parsed message on pipes, and whatever it takes it answers on the
same wire, in a task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import anyio
import mcp.types as types
import pydantic_core
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage

from bosun.streams import pipe_streams

log = logging.getLogger("bosun.gateway")

DRAIN_S = 60  # how long answers to requests still in flight are awaited after stdin ends
MAX_MESSAGE = 16 * 1024 * 1024  # bytes in one line; a longer one is refused, not buffered forever

Write = Callable[[bytes], Awaitable[None]]


class Shortcut(Protocol):
    def take(self, message: Any, write: Write) -> Callable[[], Awaitable[None]] | None:
        """The work that answers ``message`` (with ``write``), or None to leave it to the SDK."""


Streams = tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]


class _Claim:
    """Fds 0 and 1 moved to private duplicates, and put back on exit."""

    def __init__(self) -> None:
        self.stdin = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
        self.stdout = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
        self._flags = {fd: fcntl.fcntl(fd, fcntl.F_GETFL) for fd in (self.stdin, self.stdout)}
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(2, 1)

    def release(self) -> None:
        # asyncio made the shared file descriptions non-blocking; a shell reusing them must not inherit that.
        for fd, flags in self._flags.items():
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        os.dup2(self.stdin, 0)
        os.dup2(self.stdout, 1)


class _Pipes:
    """Pipes, sockets or terminals: asyncio's non-blocking transports, no threads."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reading: asyncio.BaseTransport):
        self._reader, self._writer, self._reading = reader, writer, reading

    @classmethod
    async def open(cls, claim: _Claim) -> _Pipes:
        given, taken = os.fstat(claim.stdin), os.fstat(claim.stdout)
        if stat.S_ISSOCK(given.st_mode) and (given.st_dev, given.st_ino) == (taken.st_dev, taken.st_ino):
            sock = socket.socket(fileno=os.dup(claim.stdin))
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_MESSAGE)
            return cls(reader, writer, writer.transport)
        return cls(*await pipe_streams(claim.stdin, claim.stdout, MAX_MESSAGE, owned=False))

    async def readline(self) -> bytes:
        try:
            return await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return e.partial  # the last message may come without its newline; b"" at the end
        except asyncio.LimitOverrunError:
            raise _TooLong from None

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    def close(self) -> None:
        self._reading.close()
        self._writer.close()


class _Files:
    """Anything else (a regular file, say), which cannot be read without blocking: a worker thread."""

    def __init__(self, claim: _Claim) -> None:
        self._in = os.fdopen(claim.stdin, "rb", closefd=False)
        self._out = anyio.wrap_file(os.fdopen(claim.stdout, "wb", closefd=False))

    async def readline(self) -> bytes:
        line = await anyio.to_thread.run_sync(self._in.readline, MAX_MESSAGE + 1)
        if len(line) > MAX_MESSAGE:
            raise _TooLong
        return line

    async def write(self, data: bytes) -> None:
        await self._out.write(data)
        await self._out.flush()

    def close(self) -> None:
        pass  # the descriptors belong to the claim


class _InFlight:
    """The client's requests not yet answered."""

    def __init__(self) -> None:
        self.ids: set[types.RequestId] = set()
        self._empty: anyio.Event | None = None

    def answered(self, request_id: types.RequestId | None) -> None:
        self.ids.discard(request_id)
        if not self.ids and self._empty is not None:
            self._empty.set()

    async def drained(self) -> None:
        if self.ids:
            self._empty = anyio.Event()
            await self._empty.wait()


def _streams(fd: int) -> bool:
    """Whether ``fd`` is a pipe, a socket or a terminal, which the event loop can watch."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


class _TooLong(Exception):
    pass


def _parse_error(e: Exception) -> SessionMessage:
    error = types.ErrorData(code=types.PARSE_ERROR, message=f"not a JSON-RPC message: {str(e)[:300]}")
    return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=None, error=error))


@contextlib.asynccontextmanager
async def pipe_stdio(shortcut: Shortcut | None = None) -> AsyncIterator[Streams]:
    """The process's stdin and stdout as the message streams ``Server.run`` takes; ``shortcut`` is
    offered each message first when the wire is a pipe, a socket or a terminal."""
    claim = _Claim()
    wire: _Pipes | _Files
    # Asked of the files themselves: asyncio refuses a regular file with ValueError, uvloop accepts one
    # and then never reads it.
    if all(_streams(fd) for fd in (claim.stdin, claim.stdout)):
        wire = await _Pipes.open(claim)
    else:
        wire = _Files(claim)
    read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](64)
    write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](64)
    written = anyio.Event()
    in_flight = _InFlight()
    # Files are written from a worker thread, which tasks writing at once would interleave.
    shortcut = shortcut if isinstance(wire, _Pipes) else None

    async def answered_by(job: Callable[[], Awaitable[None]], request_id: Any) -> None:
        try:
            await job()
        except (ConnectionError, RuntimeError, OSError):
            pass  # the client went away; the end of stdin ends the session
        finally:
            in_flight.answered(request_id)

    async def read_lines(tg: TaskGroup) -> None:
        async with read_send:
            while True:
                try:
                    line = await wire.readline()
                except _TooLong:
                    log.error("a client message exceeds %d bytes; closing stdio", MAX_MESSAGE)
                    return
                if not line:
                    # A client that sends its requests and closes stdin (a script, a pipe) still gets
                    # every answer: ending the session at once would cancel them.
                    with anyio.move_on_after(DRAIN_S):
                        await in_flight.drained()
                    return
                if not line.strip():
                    continue
                try:
                    raw = pydantic_core.from_json(line)
                    job = shortcut.take(raw, wire.write) if shortcut is not None else None
                    if job is not None:
                        request_id = raw.get("id") if raw.get("method") else None
                        if request_id is not None:
                            in_flight.ids.add(request_id)
                        tg.start_soon(answered_by, job, request_id)
                        continue
                    message = types.jsonrpc_message_adapter.validate_python(raw, by_name=False)
                except ValueError as e:
                    # The SDK's server drops such a line silently; the client deserves an answer, and we a record.
                    log.warning("refused a malformed message on stdio: %s", str(e)[:300])
                    await write_send.send(_parse_error(e))
                    continue
                if isinstance(message, types.JSONRPCRequest):
                    in_flight.ids.add(message.id)
                await read_send.send(SessionMessage(message))

    async def write_lines() -> None:
        try:
            async with write_recv:
                async for sm in write_recv:
                    if isinstance(sm.message, types.JSONRPCResponse | types.JSONRPCError):
                        in_flight.answered(sm.message.id)
                    await wire.write(sm.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n")
        except (ConnectionError, RuntimeError, OSError):
            pass  # the client went away; the end of stdin ends the session
        finally:
            written.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_lines, tg)
            tg.start_soon(write_lines)
            try:
                yield read_recv, write_send
            finally:
                await write_send.aclose()
                with anyio.move_on_after(5, shield=True):
                    await written.wait()  # the last replies reach the client before stdio is let go
                tg.cancel_scope.cancel()
    finally:
        wire.close()
        claim.release()
