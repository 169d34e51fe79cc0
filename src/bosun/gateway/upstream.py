"""One upstream MCP server in a container: started lazily, reused, restarted, stopped when idle.

Layering follows the SDK: the backend gives bytes (``StdioChannel``), ``channel_transport``
turns them into JSON-RPC messages, and the SDK's ``ClientSession`` speaks the protocol on top.

``tools/call``, the one request on the hot path, goes beside the session instead (``Wire``):
written as JSON, its reply matched by id straight from the reader and validated once as a
``CallToolResult``. Through ``ClientSession`` the same call took a stream per request, a
response router, a model round trip each way and a re-validation of structured content,
which was a sixth of the stdio gateway's busy time under load. Everything else (the
handshake, listings, the server's own requests and notifications) stays with the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import mcp.types as types
import pydantic_core
from anyio.abc import TaskGroup
from mcp import ClientSession
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from bosun.gateway.downstream import Relay
from bosun.runtime.backend import Backend, ContainerInfo, ContainerSpec, StderrSink, StdioChannel
from bosun.telemetry import traces

log = logging.getLogger("bosun.upstream")
server_log = logging.getLogger("bosun.server")

MAX_MESSAGE = 16 * 1024 * 1024  # one JSON-RPC message; a server that streams more without a newline is broken
_EXPIRY_CHECK_S = 0.25  # how late a call's timeout may be noticed


class UpstreamError(RuntimeError):
    """The server could not be started or reached; the message is safe to show a client."""


def _future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


def _unanswered(server: str, what: str, timeout_s: float) -> str:
    return (f"server {server!r} did not answer {what} within {timeout_s:g} s, so it was cancelled (a server's "
            "calls may take longer with servers.NAME.call_timeout_s in the config)")  # fmt: skip


@dataclass
class _Waiting:
    # A bare future rather than an anyio Event, which looks up the running async library each time it
    # is made (1.4 us against 0.4 us here, per call). The gateway runs on asyncio (the backends need it).
    reply: asyncio.Future[None] = field(default_factory=_future)
    message: dict[str, Any] | None = None
    progress: ProgressFnT | None = None
    deadline: float = math.inf
    expired: bool = False
    sending: asyncio.Task[Any] | None = None  # the caller, while its request waits to be written


class Wire:
    """Requests written at the message level on a server's stdio, beside the SDK session's own.

    Their ids are strings with a prefix of their own, so they never meet the session's integer ids.
    """

    def __init__(
        self,
        channel: StdioChannel,
        server: str,
        on_log: Callable[[types.LoggingMessageNotificationParams], Awaitable[None]] | None = None,
    ) -> None:
        self._channel = channel
        self._server = server
        self._on_log = on_log
        self._ids = itertools.count(1)
        self._waiting: dict[str, _Waiting] = {}
        self._closed: str | None = None
        self._busy = asyncio.Event()  # set when a request starts waiting: ``expire_overdue`` sleeps until then

    async def request(
        self, method: str, params: dict[str, Any], progress: ProgressFnT | None = None,
        timeout_s: float | None = None, what: str = "",
    ) -> Any:  # fmt: skip
        """The ``result`` of the server's reply; ``MCPError`` for an error reply, ``UpstreamError`` if it goes away
        or does not answer within ``timeout_s`` (then the request is cancelled at the server)."""
        if self._closed:
            raise UpstreamError(self._closed)
        request_id = f"bosun-{next(self._ids)}"
        if not self._waiting:
            self._busy.set()
        waiting = self._waiting[request_id] = _Waiting(progress=progress)
        meta: dict[str, Any] = {"progressToken": request_id} if progress is not None else {}
        if timeout_s:
            waiting.deadline = time.monotonic() + timeout_s  # watched by ``expire_overdue``
            waiting.sending = asyncio.current_task()
        try:
            with traces.outbound(method, str(params.get("name", "")), request_id, meta):
                if meta:
                    params = {**params, "_meta": meta}
                message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
                await self._channel.send(pydantic_core.to_json(message) + b"\n")
                waiting.sending = None
                await waiting.reply
                if waiting.expired and waiting.message is None:
                    raise TimeoutError
        except BaseException as e:
            if self._waiting.pop(request_id, None) is not None and not self._closed:
                # Cancelled (the client gave up, or the time ran out): tell the server too, as the SDK's session
                # would; briefly, as a server that stopped reading would never take it.
                cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}
                with anyio.move_on_after(1, shield=True), contextlib.suppress(Exception):
                    await self._channel.send(pydantic_core.to_json(cancel) + b"\n")
            if waiting.expired and waiting.message is None and timeout_s:
                if isinstance(e, asyncio.CancelledError) and (task := asyncio.current_task()) is not None:
                    task.uncancel()  # the cancellation was ``expire_overdue``'s, for this time-out alone
                raise UpstreamError(_unanswered(self._server, what or method, timeout_s)) from None
            raise
        reply = waiting.message
        if reply is None:
            raise UpstreamError(self._closed or f"server {self._server!r} closed the connection")
        if "error" in reply:
            try:
                error = types.ErrorData.model_validate(reply["error"])
            except ValueError:
                why = f"{self._server} answered {method} with a malformed error"
                raise MCPError(types.INTERNAL_ERROR, why) from None
            raise MCPError.from_error_data(error)
        return reply.get("result")

    async def take(self, message: Any) -> bool:
        """Consume ``message`` if it is a reply to, or progress on, one of this wire's requests."""
        if not isinstance(message, dict):
            return False
        request_id = message.get("id")
        if isinstance(request_id, str) and "method" not in message:
            waiting = self._waiting.pop(request_id, None)
            if waiting is None:
                return request_id.startswith("bosun-")  # a late reply to a cancelled request
            waiting.message = message
            _wake(waiting)
            return True
        if message.get("method") == "notifications/message" and self._on_log is not None:
            # Here, not in the session: a call's log lines must be relayed before its reply, which the
            # session, reading its own stream in its own task, would not guarantee.
            try:
                log_params = types.LoggingMessageNotificationParams.model_validate(message.get("params"))
            except ValueError:
                return False
            with contextlib.suppress(Exception):
                await self._on_log(log_params)
            return True
        params = message.get("params")
        if message.get("method") == "notifications/progress" and isinstance(params, dict):
            waiting = self._waiting.get(str(params.get("progressToken")))
            if waiting is None or waiting.progress is None:
                return False
            try:
                done, total = float(params.get("progress", 0)), params.get("total")
                total = None if total is None else float(total)
            except (TypeError, ValueError):  # not numbers: not passed on to a client that would choke on them
                server_log.warning("malformed progress notification", extra={"server": self._server})
                return True
            text = params.get("message")
            with contextlib.suppress(Exception):
                await waiting.progress(done, total, text if isinstance(text, str) else None)
            return True
        return False

    async def expire_overdue(self) -> None:
        """Wake the requests whose time is up, looked for a few times a second while any waits: per request
        that costs a clock reading, where a timer handle each (or a cancel scope, see ``lane._Cancellable``)
        cost 2.3 us and more, for a timeout that seldom comes."""
        while True:
            if not self._waiting:
                self._busy.clear()
                await self._busy.wait()
            await anyio.sleep(_EXPIRY_CHECK_S)
            now = time.monotonic()
            for waiting in self._waiting.values():
                if waiting.deadline < now and not waiting.expired:
                    waiting.expired = True
                    if waiting.sending is not None:  # a server that stopped reading: its caller is stuck writing
                        waiting.sending.cancel()
                    else:
                        _wake(waiting)

    @property
    def closed(self) -> str | None:
        """Why the server's output can no longer be read (it ended, or broke the protocol), or None."""
        return self._closed

    def close(self, why: str) -> None:
        self._closed = why
        for waiting in self._waiting.values():
            _wake(waiting)
        self._waiting.clear()


def _wake(waiting: _Waiting) -> None:
    if not waiting.reply.done():  # cancelled with its caller, which is on its way out
        waiting.reply.set_result(None)


@contextlib.asynccontextmanager
async def channel_transport(
    channel: StdioChannel, server: str, wire: Wire | None = None
) -> AsyncIterator[
    tuple[
        anyio.abc.ObjectReceiveStream[SessionMessage | Exception],
        anyio.abc.ObjectSendStream[SessionMessage],
    ]
]:
    """Newline-delimited JSON-RPC over a container's stdio, as the streams ``ClientSession`` takes;
    replies and progress for ``wire``'s requests go to it instead."""
    read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](64)
    write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](64)

    async def reader() -> None:
        # The start of a line still to be ended, kept in pieces: joined each time more came, a server writing
        # megabytes without a newline would have the loop copy and scan them again for every piece.
        partial: list[bytes] = []
        size = 0
        closed = f"server {server!r} closed its connection"
        async with read_send:
            try:
                while True:
                    data = await channel.receive()
                    if b"\n" not in data:
                        partial.append(data)
                        size += len(data)
                        if size > MAX_MESSAGE:
                            closed = f"server {server!r} wrote a line over {MAX_MESSAGE >> 20} MiB; it was cut off"
                            log.error("%s", closed)
                            return
                        continue
                    if partial:
                        data = b"".join([*partial, data])
                        partial.clear()
                    *lines, rest = data.split(b"\n")
                    if rest:
                        partial.append(rest)
                    size = len(rest)
                    for line in lines:
                        if not line.strip():
                            continue
                        try:
                            raw = pydantic_core.from_json(line)
                            if wire is not None and await wire.take(raw):
                                continue
                            msg = types.jsonrpc_message_adapter.validate_python(raw, by_name=False)
                        except ValueError:
                            # Servers sometimes print banners to stdout; skip and record, never crash.
                            server_log.warning("non-JSON-RPC stdout line", extra={"server": server, "line": line[:500]})
                            continue
                        await read_send.send(SessionMessage(msg))
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            finally:
                if wire is not None:
                    wire.close(closed)

    async def writer() -> None:
        async with write_recv:
            async for sm in write_recv:
                data = sm.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
                try:
                    await channel.send(data)
                except (OSError, anyio.BrokenResourceError):
                    return

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer)
        if wire is not None:
            tg.start_soon(wire.expire_overdue)
        try:
            yield read_recv, write_send
        finally:
            await write_send.aclose()
            await channel.aclose()
            tg.cancel_scope.cancel()


def _innermost(error: BaseException) -> BaseException:
    """The first real error inside task-group wrappers, whose own message ("unhandled errors in a
    TaskGroup") says nothing a user can act on."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


@dataclass
class Link:
    """One connection to a server, as its MCP session runs on it: the message streams, the message-level
    wire when there is one, and how to tell the connection is still good."""

    read: ReadStream[SessionMessage | Exception]
    write: WriteStream[SessionMessage]
    where: str  # a container id or a URL, for logs
    lost: Callable[[ClientSession], Awaitable[str | None]]  # why the connection is gone, or None
    wire: Wire | None = None
    container: ContainerInfo | None = None
    reconnect: bool = False  # keep it connected in the background (a remote), not just on next use


Connector = Callable[[Relay], contextlib.AbstractAsyncContextManager[Link]]


def container_connector(
    backend: Backend, spec_factory: Callable[[], ContainerSpec], server: str, on_stderr: StderrSink
) -> Connector:
    """A server in a container: started on connect, its stdio the link, removed on disconnect."""

    @contextlib.asynccontextmanager
    async def connect(relay: Relay) -> AsyncIterator[Link]:
        container, channel = await backend.start(spec_factory(), on_stderr)
        try:
            wire = Wire(channel, server, on_log=relay.logging)

            async def lost(_: ClientSession) -> str | None:
                try:
                    state = (await backend.inspect(container.id)).get("State", {})
                except Exception as e:
                    return f"the engine cannot say how the container is ({e})"
                if isinstance(state, dict) and not state.get("Running", False):
                    return f"container exited (code {state.get('ExitCode')}); it restarts on next use"
                if wire.closed is not None:  # running, but nothing it says can be read any more
                    return f"{wire.closed}; it restarts on next use"
                return None

            async with channel_transport(channel, server, wire) as (read, write):
                yield Link(read, write, container.id[:12], lost, wire, container)
        finally:
            with anyio.CancelScope(shield=True):
                await backend.stop(container.id, timeout_s=2)

    return connect


@dataclass
class _Live:
    session: ClientSession
    link: Link
    tools: list[types.Tool] | None = None


class Upstream:
    """A server and the MCP session to it, kept alive across calls.

    It connects when the first caller needs it (never per call; for a container, starting it), watches
    the connection, reconnects with backoff when it is lost (a remote at once, in the background, its
    callers told meanwhile that it is reconnecting; a container on next use), and disconnects after
    ``idle_timeout_s`` unused.
    """

    def __init__(
        self,
        name: str,
        connect: Connector,
        task_group: TaskGroup,
        idle_timeout_s: float = 300,
        on_tools_changed: Callable[[str], None] | None = None,
        on_resource_updated: Callable[[str, str], None] | None = None,
    ) -> None:
        self.name = name
        self._connect = connect
        self._tg = task_group
        self._idle_timeout_s = idle_timeout_s
        self._on_tools_changed = on_tools_changed
        self._on_resource_updated = on_resource_updated
        self._live: _Live | None = None
        self._start_lock = anyio.Lock()
        self._stop = anyio.Event()
        self._done: anyio.Event | None = None
        self._last_used = time.monotonic()
        self._crashes = 0
        self._reconnecting: str | None = None  # why a lost remote is not back yet, while its task reconnects it
        self.restarts = 0
        self._starts = 0
        self.relay = Relay(name)

    @property
    def container(self) -> ContainerInfo | None:
        return self._live.link.container if self._live else None

    async def session(self) -> ClientSession:
        self._last_used = time.monotonic()
        if self._live is None:
            if self._reconnecting is not None:
                # Its own task reconnects a lost remote. A caller queued behind that task's backoff and connect
                # timeouts (an address that no longer answers can take 30 s to refuse) would wait as long,
                # and a listing with it, so it is told at once instead; the listing leaves the server out.
                why = self._reconnecting
                raise UpstreamError(f"server {self.name!r} lost its connection and is reconnecting ({why})")
            await self._started()
        assert self._live is not None
        return self._live.session

    async def _started(self) -> None:
        async with self._start_lock:
            if self._live is None:
                await self._start()

    async def session_offering(self, capability: Literal["prompts", "resources"]) -> ClientSession | None:
        """The session if the server declared ``capability`` at initialization, else None."""
        session = await self.session()
        caps = session.server_capabilities
        return session if caps is not None and getattr(caps, capability) is not None else None

    def _backoff(self) -> float:
        # A server that keeps failing young is retried ever more slowly, so a crash loop cannot hammer anything.
        return min(0.25 * 2 ** (self._crashes - 1), 15) if self._crashes else 0

    async def _start(self) -> None:
        await anyio.sleep(self._backoff())
        ready = anyio.Event()
        failure: list[BaseException] = []
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._tg.start_soon(self._run, ready, failure, self._done)
        await ready.wait()
        if failure:
            cause = _innermost(failure[0])
            raise UpstreamError(f"server {self.name!r} failed to start: {cause}") from failure[0]

    async def _run(self, ready: anyio.Event, failure: list[BaseException], done: anyio.Event) -> None:
        started = time.monotonic()
        connected = False
        reconnect = False
        try:
            async with (
                self._connect(self.relay) as link,
                ClientSession(
                    link.read,
                    link.write,
                    read_timeout_seconds=None,
                    message_handler=self._on_message,
                    sampling_callback=self.relay.sampling,
                    elicitation_callback=self.relay.elicitation,
                    list_roots_callback=self.relay.list_roots,
                    logging_callback=self.relay.logging,
                ) as session,
            ):
                connected, reconnect = True, link.reconnect
                with anyio.fail_after(60):
                    await session.initialize()
                self._live = _Live(session, link)
                self._starts += 1
                if self._starts > 1 and self._on_tools_changed:
                    # A new process may offer other tools than the one before: vet them afresh.
                    self._on_tools_changed(self.name)
                log.info("started", extra={"server": self.name, "container": link.where})
                ready.set()
                await self._watch(link, session)
        except Exception as e:
            if not ready.is_set():
                failure.append(e)
            else:
                log.warning("server connection ended: %s", e, extra={"server": self.name}, exc_info=True)
        finally:
            was_live = self._live is not None
            self._live = None
            ready.set()
            if connected:
                self._crashes = self._crashes + 1 if time.monotonic() - started < 30 else 0
                if not self._stop.is_set():
                    self.restarts += 1
            done.set()
            if was_live and not self._stop.is_set() and self._on_tools_changed:
                self._on_tools_changed(self.name)  # its tools are gone from the lists until it is back
            if reconnect and not self._stop.is_set():
                self._reconnecting = "its first try is under way"
                self._tg.start_soon(self._keep_connected)

    async def _keep_connected(self) -> None:
        """Reconnect a lost remote in the background, with backoff, until it answers or is stopped."""
        try:
            while self._live is None and not self._stop.is_set():
                self._crashes = max(self._crashes, 1)
                try:
                    await self._started()
                except UpstreamError as e:
                    log.warning("reconnecting: %s", e, extra={"server": self.name})
                    self._reconnecting = f"last try: {_innermost(e.__cause__ or e)}"
                    self._crashes += 1
        finally:
            self._reconnecting = None

    async def _watch(self, link: Link, session: ClientSession) -> None:
        """Return when asked to stop, when idle too long, or when the connection is lost."""
        while not self._stop.is_set():
            with anyio.move_on_after(2):
                await self._stop.wait()
            if time.monotonic() - self._last_used > self._idle_timeout_s:
                log.info("stopping idle server", extra={"server": self.name})
                self._stop.set()
                return
            why = await link.lost(session)
            if why is not None:
                log.warning("connection lost: %s", why, extra={"server": self.name})
                return

    async def _on_message(self, message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            if self._live:
                self._live.tools = None
            if self._on_tools_changed:
                self._on_tools_changed(self.name)
        elif isinstance(message, types.ResourceUpdatedNotification) and self._on_resource_updated:
            self._on_resource_updated(self.name, str(message.params.uri))

    async def call_tool(
        self, name: str, arguments: dict[str, Any], progress: ProgressFnT | None = None, timeout_s: float | None = None
    ) -> tuple[types.CallToolResult, Any]:
        """One ``tools/call`` on the wire (see the module's docstring); unanswered after ``timeout_s``, it is
        cancelled at the server and fails (``UpstreamError``). With the result, the JSON value it was validated
        from when it came off the wire (None through the SDK's session), for ``Redactor.model``."""
        session = await self.session()
        live = self._live
        if live is None:
            raise UpstreamError(f"server {self.name!r} stopped")
        if live.link.wire is None:
            try:
                return await session.call_tool(name, arguments, read_timeout_seconds=timeout_s,
                                               progress_callback=progress), None  # fmt: skip
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as e:
                raise UpstreamError(f"server {self.name!r} went away during the call ({e})") from None
            except MCPError as e:
                if e.error.code == types.REQUEST_TIMEOUT and timeout_s is not None:
                    raise UpstreamError(_unanswered(self.name, name, timeout_s)) from None
                raise
        params = {"name": name, "arguments": arguments}
        result = await live.link.wire.request("tools/call", params, progress, timeout_s, name)
        try:
            return types.CallToolResult.model_validate(result), result
        except ValueError as e:
            raise MCPError(types.INTERNAL_ERROR, f"{self.name} answered tools/call with a malformed result") from e

    async def list_tools(self) -> list[types.Tool]:
        session = await self.session()
        live = self._live
        if live is not None and live.tools is not None:
            return live.tools
        tools: list[types.Tool] = []
        cursor: str | None = None
        while True:
            page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                break
        if live is not None:
            live.tools = tools
        return tools

    async def stop(self) -> None:
        self._stop.set()
        # Wait for _run to leave, so the container is really gone when we return.
        if self._done is not None:
            with anyio.move_on_after(15):
                await self._done.wait()
