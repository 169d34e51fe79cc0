"""The gateway, as a sandbox reaches it: a Unix socket mounted into the sandbox, served on the host.

Each connection is one MCP client (the agent starting "the bosun server", bridged by socat) and is
served by its own ``bosun gateway run --agent NAME`` on the host. So the sandbox needs no network to
reach its tools, holds no gateway token (the socket is its identity: only this sandbox has it
mounted), and policy, flow control, screening and audit apply to the agent as to any other.

One gateway is always started ahead of the next connection: an agent asks for its tools as soon as
it starts, and some (Claude Code in ``-p`` mode) go on without the ones that are late; the second
a Python process takes to start is paid while the sandbox itself starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # the gateway sees its client's end as the end of stdin, and answers what is left
    except OSError:
        writer.close()


log = logging.getLogger("bosun.sandbox")
MAX_CLIENTS = 8  # MCP clients at once: an agent and a few subagents each start their own


class GatewayRelay:
    def __init__(self, path: Path, agent: str, log_file: Path, command: list[str] | None = None) -> None:
        self.path = path
        self.log_file = log_file
        self.command = command or [sys.executable, "-m", "bosun", "gateway", "run", "--agent", agent]
        self._children: list[asyncio.subprocess.Process] = []
        self._spare: tuple[asyncio.subprocess.Process, socket.socket] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: socket.socket | None = None

    async def _spawn(self) -> tuple[asyncio.subprocess.Process, socket.socket]:
        ours, theirs = socket.socketpair()
        with theirs, self.log_file.open("ab") as errors:
            child = await asyncio.create_subprocess_exec(
                *self.command, stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=errors
            )
        self._children.append(child)
        return child, ours

    async def __aenter__(self) -> GatewayRelay:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        # The sandbox runs as the workspace's owner, another uid than this process's possibly; the socket
        # is reachable only through the one sandbox's mount (its folder is closed to everyone else).
        self.path.chmod(0o666)
        listener.listen(8)
        listener.setblocking(False)
        self._listener = listener
        self._spare = await self._spawn()
        self._start(self._accept(listener))
        return self

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            # Each connection costs a process on the host: an agent opening them without end must not fill it.
            self._children = [c for c in self._children if c.returncode is None]
            if len(self._children) - (self._spare is not None) >= MAX_CLIENTS:
                log.warning("sandbox gateway socket: refused a connection beyond %d at once", MAX_CLIENTS)
                conn.close()
                continue
            spare, self._spare = self._spare or await self._spawn(), None
            self._start(self._splice(conn, spare[1]))
            self._spare = await self._spawn()

    async def _splice(self, conn: socket.socket, gateway: socket.socket) -> None:
        client_r, client_w = await asyncio.open_connection(sock=conn)
        gateway_r, gateway_w = await asyncio.open_connection(sock=gateway)
        try:
            await asyncio.gather(_copy(client_r, gateway_w), _copy(gateway_r, client_w))
        finally:
            client_w.close()
            gateway_w.close()

    async def __aexit__(self, *_exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        if self._spare is not None:
            self._spare[1].close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        # Each gateway now has the end of its stdin, and stops its servers' containers as it exits; one that
        # does not is stopped.
        for child in self._children:
            try:
                await asyncio.wait_for(child.wait(), 20)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.terminate()
                await child.wait()
