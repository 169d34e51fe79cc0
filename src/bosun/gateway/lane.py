"""A fast lane for ``tools/call``, in front of the SDK's transports: streamable HTTP (``Lane``) and stdio
(``StdioLane``).

Profiled under load, the SDK's streamable HTTP stack (a transport, an SSE response with its own
tasks, a message router and a dispatcher task per POST) was about three quarters of the HTTP
gateway's CPU per tool call, and the gateway's own work (policy, flow control, screening,
audit, forwarding) a fifth. So the one request on the hot path, ``tools/call`` on an
established handshake-era session, is answered here at the message level, with the SDK's
types, and everything else (the handshake, listings, resources, the GET stream, 2026-era
requests, anything malformed) goes to the SDK untouched.

A lane call answers with plain JSON when the call produces nothing but its result, and turns
into an event stream as soon as something must reach the client first: progress, a server's
log message, or a request the upstream server puts to the client (sampling, elicitation,
roots). The client's answers to such requests come back as POSTed JSON-RPC responses, and
``notifications/cancelled`` for a lane call cancels it; both are taken here.

The lane also keeps sessions alive and ends idle ones (the SDK's own idle timer only sees the
requests that reach the SDK), by passing a DELETE to the SDK as a client would.

Over stdio the SDK's share was smaller but still large (its dispatcher, a task and middleware per
request, a model of every message both ways), so the same calls are served there too, on the
connection's one handshake-era session; a result is a line on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard, TypeVar

import anyio
import mcp.types as types
import pydantic_core
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bosun.gateway.core import Gateway
from bosun.gateway.downstream import Downstream
from bosun.gateway.names import Naming
from bosun.gateway.stdio import Write
from bosun.telemetry import traces

log = logging.getLogger("bosun.gateway")

ResultT = TypeVar("ResultT", bound=BaseModel)

SESSION_IDLE_S = 1800.0  # as the SDK's default: a session with nothing in flight for this long is ended
SECURE_CAP = 256  # distinct (Content-Type, Host, Origin) whose security verdict is kept
MAX_BODY = 4 * 1024 * 1024  # a larger POST is not the hot path: the SDK takes it (and its own limit applies)
AGENT_HEADER = b"x-bosun-agent"  # the agent the bearer token names, set by BearerAuth (a client's own is dropped)
HEADERS = "bosun.headers"  # a scope key: the request's headers as BearerAuth read them (``first_headers``)
STDIO_CLIENT = "local"  # the one client of a stdio gateway, as the gateway keys its sessions, flows and log levels


class Reply(Protocol):
    """Where one lane call's messages go: ``event`` for what precedes the result, ``finish`` for the result."""

    async def event(self, message: dict[str, Any]) -> None: ...

    async def finish(self, message: dict[str, Any]) -> None: ...


class _Reply:
    """One lane call's HTTP response: JSON if the result is all there is, else an event stream."""

    def __init__(self, send: Send, session_id: str) -> None:
        self._send = send
        self._session_id = session_id.encode()
        self._streaming = False

    async def event(self, message: dict[str, Any]) -> None:
        if not self._streaming:
            self._streaming = True
            await self._start(b"text/event-stream", [(b"cache-control", b"no-cache")])
        data = b"event: message\r\ndata: " + pydantic_core.to_json(message) + b"\r\n\r\n"
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self, message: dict[str, Any]) -> None:
        if self._streaming:
            data = b"event: message\r\ndata: " + pydantic_core.to_json(message) + b"\r\n\r\n"
            await self._send({"type": "http.response.body", "body": data})
            return
        body = pydantic_core.to_json(message)
        await self._start(b"application/json", [(b"content-length", str(len(body)).encode())])
        await self._send({"type": "http.response.body", "body": body})

    async def _start(self, content_type: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        headers = [(b"content-type", content_type), (b"mcp-session-id", self._session_id), *extra]
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})


class _Lines:
    """One lane call's messages on stdio: each a line, in order, on the one connection."""

    def __init__(self, write: Write) -> None:
        self._write = write

    async def event(self, message: dict[str, Any]) -> None:
        await self._write(pydantic_core.to_json(message) + b"\n")

    finish = event


class _Cancellable:
    """A lane call's task, which the client's ``notifications/cancelled`` cancels.

    Cancelled the asyncio way, once, rather than through an anyio cancel scope around every call:
    the scope's set-up and tear-down (its task state looked up and registered each time) cost about
    7 us a call, measured as the HTTP lane's throughput with the gateway's own work stubbed out
    (14187 -> 15769 calls/s at 16 clients), for a cancellation that seldom comes."""

    __slots__ = ("requested", "task")

    def __init__(self) -> None:
        task = asyncio.current_task()
        assert task is not None, "a lane call runs in a task"
        self.task = task
        self.requested = False

    def cancel(self) -> None:
        if not self.requested:
            self.requested = True
            self.task.cancel()


@dataclass
class LaneSession:
    """The client behind one HTTP session or stdio connection, as the gateway's relay sees it while serving
    lane calls (``Downstream.session``): its capabilities, and the streams of its calls in flight."""

    session_id: str
    capabilities: types.ClientCapabilities
    replies: dict[types.RequestId, Reply] = field(default_factory=dict)
    calls: dict[types.RequestId, _Cancellable] = field(default_factory=dict)
    asked: dict[str, tuple[anyio.Event, list[dict[str, Any]]]] = field(default_factory=dict)
    in_flight: int = 0
    last_active: float = field(default_factory=time.monotonic)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def check_client_capability(self, capability: types.ClientCapabilities) -> bool:
        return all(getattr(self.capabilities, name, None) is not None for name in capability.model_fields_set)

    async def _to(self, related: types.RequestId | None, message: dict[str, Any]) -> None:
        reply = self.replies.get(related) if related is not None else None
        if reply is None:
            raise MCPError(types.INVALID_REQUEST, "the client request this belongs to has ended")
        await reply.event(message)

    async def send_request(
        self,
        request: Any,
        result_type: type[ResultT],
        request_read_timeout_seconds: float | None = None,
        metadata: ServerMessageMetadata | None = None,
        progress_callback: Any = None,
    ) -> ResultT:
        key = f"bosun-lane-{next(self._ids)}"
        answered, answer = self.asked[key] = (anyio.Event(), [])
        try:
            params = request.params.model_dump(by_alias=True, mode="json", exclude_none=True) if request.params else {}
            message = {"jsonrpc": "2.0", "id": key, "method": request.method, "params": params}
            await self._to(metadata.related_request_id if metadata else None, message)
            with anyio.fail_after(request_read_timeout_seconds):
                await answered.wait()
        finally:
            self.asked.pop(key, None)
        reply = answer[0]
        if "error" in reply:
            raise MCPError.from_error_data(types.ErrorData.model_validate(reply["error"]))
        return result_type.model_validate(reply.get("result", {}))

    async def send_log_message(
        self, level: types.LoggingLevel, data: Any, logger: str | None = None,
        related_request_id: types.RequestId | None = None,
    ) -> None:  # fmt: skip
        params = {"level": level, "data": data} | ({"logger": logger} if logger else {})
        await self._to(related_request_id, {"jsonrpc": "2.0", "method": "notifications/message", "params": params})

    def answer(self, message: dict[str, Any]) -> bool:
        """Take the client's answer to one of this session's requests; False if it is not one."""
        pending = self.asked.get(str(message.get("id")))
        if pending is None:
            return False
        pending[1].append(message)
        pending[0].set()
        return True


def first_headers(scope: Scope) -> dict[bytes, bytes]:
    """A request's headers by name (names arrive lowercased in ASGI); of a repeated one, the first, as
    Starlette's ``Headers.get`` (and so the SDK) reads it. Every check of a request must read the same
    value the handler acts on: a session id checked as the last header but served as the first would
    let one agent's token use another agent's session."""
    return dict(reversed(scope["headers"]))


async def _read_body(receive: Receive) -> tuple[bytes, list[Message], bool]:
    """The body if it fits in ``MAX_BODY`` (else what was read so far), the messages read, and whether it fit."""
    chunks: list[bytes] = []
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return b"", messages, False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            return b"", messages, False
        if not message.get("more_body"):
            return b"".join(chunks), messages, True


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


class Lane:
    """ASGI middleware serving ``tools/call`` on known sessions itself; see the module's docstring."""

    def __init__(
        self,
        app: ASGIApp,
        gateway: Gateway,
        security: TransportSecuritySettings,
        path: str = "/mcp",
        idle_s: float = SESSION_IDLE_S,
    ) -> None:
        self.app = app
        self.gateway = gateway
        self.naming = Naming(gateway.only)
        self.path = path
        self.idle_s = idle_s
        self.sessions: dict[str, LaneSession] = {}
        self._security = TransportSecurityMiddleware(security)
        self._secure: dict[tuple[bytes | None, ...], bool] = {}  # the security check's verdicts, by what it reads
        self._host = b""  # a Host header the SDK accepts, learned from traffic, for the DELETEs that end idle sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._with_sweeper(scope, receive, send)
            return
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = scope.get(HEADERS) or first_headers(scope)
        session_id = headers.get(b"mcp-session-id", b"").decode("latin-1")
        session = self.sessions.get(session_id)
        if session is not None:
            session.in_flight += 1
        try:
            if scope["method"] != "POST":
                await self.app(scope, receive, self._watching(session_id, send, scope["method"] == "DELETE"))
                return
            body, messages, whole = await _read_body(receive)
            receive = _replay(messages, receive)
            message = _parse(body) if whole else None
            if session is not None and message is not None and await self._take(session, message, scope, headers, send):
                return
            if not session_id and message is not None and message.get("method") == "initialize":
                send = self._opening(message, send)
            await self.app(scope, receive, self._watching(session_id, send, False))
        finally:
            if session is not None:
                session.in_flight -= 1
                session.last_active = time.monotonic()

    # -- the lane ---------------------------------------------------------------------------------

    async def _take(
        self, session: LaneSession, message: dict[str, Any], scope: Scope, headers: dict[bytes, bytes], send: Send
    ) -> bool:
        """Serve ``message`` here if it is the lane's; False to leave it to the SDK."""
        if _settle(session, message):
            await _accepted(send)
            return True
        params = _tool_call(message)
        if params is None or not await self._fits(scope, headers):
            return False
        agent = headers.get(AGENT_HEADER, b"unauthenticated").decode()
        await self._call(session, message["id"], params, _meta(message), agent, send)
        return True

    async def _fits(self, scope: Scope, headers: dict[bytes, bytes]) -> bool:
        """The checks the SDK's transport makes of a POST (Host, Origin, Content-Type, Accept, protocol
        version); a request failing any is left to the SDK, which refuses it in its own words."""
        # The SDK's check reads only these three headers, so its verdict on them is kept rather than asked
        # again (a Starlette Request and its headers parsed) on every call.
        key = (headers.get(b"content-type"), headers.get(b"host"), headers.get(b"origin"))
        secure = self._secure.get(key)
        if secure is None:
            if len(self._secure) >= SECURE_CAP:
                self._secure.clear()
            secure = await self._security.validate_request(Request(scope), is_post=True) is None
            self._secure[key] = secure
        if not secure:
            return False
        accept = headers.get(b"accept", b"")
        version = headers.get(b"mcp-protocol-version")
        if version and version.decode("latin-1") not in HANDSHAKE_PROTOCOL_VERSIONS:
            return False
        self._host = headers.get(b"host") or self._host
        return b"text/event-stream" in accept and (b"application/json" in accept or b"*/*" in accept)

    async def _call(
        self, session: LaneSession, request_id: types.RequestId, params: types.CallToolRequestParams,
        meta: dict[str, Any], agent: str, send: Send,
    ) -> None:  # fmt: skip
        reply = _Reply(send, session.session_id)
        with contextlib.suppress(OSError):
            await serve_call(self.gateway, self.naming, session, f"http:{session.session_id}", agent, request_id,
                             params, meta, reply)  # fmt: skip

    # -- sessions ---------------------------------------------------------------------------------

    def _opening(self, message: dict[str, Any], send: Send) -> Send:
        """Learn the session an ``initialize`` opens, and what the client can do, from the SDK's answer."""
        try:
            capabilities = types.ClientCapabilities.model_validate(_params(message).get("capabilities") or {})
        except ValidationError:
            return send  # the SDK refuses it

        async def opened(out: Message) -> None:
            if out["type"] == "http.response.start" and out["status"] < 400:
                for key, value in out.get("headers", []):
                    if key.lower() == b"mcp-session-id":
                        session_id = value.decode("latin-1")
                        self.sessions[session_id] = LaneSession(session_id, capabilities)
            await send(out)

        return opened

    def _watching(self, session_id: str, send: Send, deleting: bool) -> Send:
        """Forget a session the SDK ended (DELETE) or no longer knows (404)."""
        if not session_id or session_id not in self.sessions:
            return send

        async def watched(out: Message) -> None:
            if out["type"] == "http.response.start" and (out["status"] == 404 or (deleting and out["status"] < 400)):
                self.sessions.pop(session_id, None)
            await send(out)

        return watched

    async def _with_sweeper(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._sweep)
            await self.app(scope, receive, send)
            tg.cancel_scope.cancel()

    async def _sweep(self) -> None:
        while True:
            await anyio.sleep(min(60.0, self.idle_s / 2))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.in_flight == 0 and now - session.last_active > self.idle_s:
                    log.info("ending idle session %s", session.session_id[:8])
                    await self._end(session.session_id)

    async def _end(self, session_id: str) -> None:
        """End a session in the SDK as its client would, with a DELETE."""
        self.sessions.pop(session_id, None)
        headers = [(b"host", self._host), (b"mcp-session-id", session_id.encode())]
        scope = {"type": "http", "method": "DELETE", "path": self.path, "raw_path": self.path.encode(),
                 "query_string": b"", "headers": headers, "http_version": "1.1", "scheme": "http",
                 "root_path": "", "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}  # fmt: skip

        async def nothing() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def discard(_: Message) -> None:
            return None

        with contextlib.suppress(Exception):
            await self.app(scope, nothing, discard)


class StdioLane:
    """The lane on a stdio connection (``pipe_stdio``'s shortcut): once a handshake-era client has
    initialized, its ``tools/call`` requests are served here, each in a task of its own, and its
    answers to the lane's requests and its cancellations of lane calls are taken here too.
    Everything else, the handshake included, goes to the SDK."""

    def __init__(self, gateway: Gateway, agent: str) -> None:
        self.gateway = gateway
        self.agent = agent
        self.naming = Naming(gateway.only)
        self.session: LaneSession | None = None

    def take(self, message: Any, write: Write) -> Callable[[], Awaitable[None]] | None:
        """The work that answers ``message`` here (writing with ``write``), or None to leave it to the SDK."""
        if not isinstance(message, dict):
            return None
        if message.get("method") == "initialize":
            self.session = _handshake(message)
            return None
        session = self.session
        if session is None:
            return None
        if _settle(session, message):
            return _nothing
        params = _tool_call(message)
        if params is None:
            return None
        request_id, meta, reply = message["id"], _meta(message), _Lines(write)
        return lambda: serve_call(self.gateway, self.naming, session, STDIO_CLIENT, self.agent, request_id, params,
                                  meta, reply)  # fmt: skip


def _handshake(initialize: dict[str, Any]) -> LaneSession | None:
    """The lane's view of a stdio client from its ``initialize``: None for a 2026-era or malformed one."""
    params = _params(initialize)
    if params.get("protocolVersion") not in HANDSHAKE_PROTOCOL_VERSIONS:
        return None
    try:
        return LaneSession(STDIO_CLIENT, types.ClientCapabilities.model_validate(params.get("capabilities") or {}))
    except ValidationError:
        return None


async def _nothing() -> None:
    return None


def _settle(session: LaneSession, message: dict[str, Any]) -> bool:
    """Take the client's answer to one of the lane's requests, or its cancellation of a lane call."""
    method = message.get("method")
    if method is None and "id" in message and ("result" in message or "error" in message):
        return session.answer(message)
    if method == "notifications/cancelled":
        cancelled = _params(message).get("requestId")
        call = session.calls.get(cancelled) if _is_id(cancelled) else None
        if call is not None:
            call.cancel()
            return True
    return False


def _tool_call(message: dict[str, Any]) -> types.CallToolRequestParams | None:
    """A well-formed ``tools/call`` request's params; None for anything else (the SDK answers it, and the
    audit middleware records what is malformed)."""
    if message.get("method") != "tools/call" or not _is_id(message.get("id")):
        return None
    try:
        return types.CallToolRequestParams.model_validate(message.get("params"))
    except ValidationError:
        return None


def _meta(message: dict[str, Any]) -> dict[str, Any]:
    meta = _params(message).get("_meta")
    return meta if isinstance(meta, dict) else {}


async def serve_call(
    gateway: Gateway, naming: Naming, session: LaneSession, client: str, agent: str, request_id: types.RequestId,
    params: types.CallToolRequestParams, meta: dict[str, Any], reply: Reply,
) -> None:  # fmt: skip
    """One ``tools/call`` served at the message level: through the gateway, with progress, the server's logs
    and requests relayed on ``reply``, cancellable by the client, answered with a result or an error."""
    session.replies[request_id] = reply
    gateway.bind(client, agent)
    token = meta.get("progressToken")
    progress = _progress(reply, token) if token is not None else None
    downstream = Downstream(session, request_id, log_level=gateway.log_levels.get(client))
    outcome: dict[str, Any]
    call = session.calls[request_id] = _Cancellable()
    try:
        try:
            with traces.inbound("tools/call", params.name, request_id, meta):
                public = naming.public(params.name)
                result = await gateway.call_tool(client, public, params.arguments, progress, downstream)
            dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            outcome = {"jsonrpc": "2.0", "id": request_id, "result": dumped}
        except MCPError as e:
            outcome = _error(request_id, e.error)
        except Exception as e:
            log.exception("tools/call %s failed", params.name)
            outcome = _error(request_id, types.ErrorData(code=types.INTERNAL_ERROR, message=str(e)[:500]))
    except asyncio.CancelledError:
        if not call.requested:
            raise  # not the client's doing: its connection or the gateway is going away
        outcome = _error(request_id, types.ErrorData(code=types.INVALID_REQUEST, message="request cancelled"))
    finally:
        # Before any await: once answered, the call can no longer be cancelled, and its task carries no
        # cancellation of ours into whatever it does next.
        session.calls.pop(request_id, None)
        if call.requested:
            call.task.uncancel()
    session.replies.pop(request_id, None)
    await reply.finish(outcome)


def _parse(body: bytes) -> dict[str, Any] | None:
    try:
        message = pydantic_core.from_json(body)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _is_id(value: Any) -> TypeGuard[types.RequestId]:
    return isinstance(value, str | int) and not isinstance(value, bool)


def _params(message: dict[str, Any]) -> dict[str, Any]:
    params = message.get("params")
    return params if isinstance(params, dict) else {}


def _error(request_id: types.RequestId, error: types.ErrorData) -> dict[str, Any]:
    dumped = error.model_dump(by_alias=True, mode="json", exclude_none=True)
    return {"jsonrpc": "2.0", "id": request_id, "error": dumped}


async def _accepted(send: Send) -> None:
    await send({"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def _progress(reply: Reply, token: str | int) -> ProgressFnT:
    async def forward(progress: float, total: float | None, message: str | None) -> None:
        params: dict[str, Any] = {"progressToken": token, "progress": progress}
        params |= ({"total": total} if total is not None else {}) | ({"message": message} if message else {})
        with contextlib.suppress(Exception):
            await reply.event({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

    return forward
