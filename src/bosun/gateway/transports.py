"""Serving the gateway over stdio and over streamable HTTP (bearer token, Origin checks, /healthz)."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any, Literal

import anyio
import uvicorn
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bosun.gateway.agents import OPERATOR, Directory, token_hash
from bosun.gateway.coalesce import CoalescingHttpTools
from bosun.gateway.core import Gateway
from bosun.gateway.lane import AGENT_HEADER, HEADERS, Lane, StdioLane, first_headers
from bosun.gateway.stdio import pipe_stdio
from bosun.telemetry.metrics import CONTENT_TYPE

log = logging.getLogger("bosun.gateway")

PUBLIC_PATHS = frozenset({"/healthz"})


def _init_options(server: Server[Any]) -> Any:
    return server.create_initialization_options(
        NotificationOptions(tools_changed=True, prompts_changed=True, resources_changed=True)
    )


async def _cancel_on_signals(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def serve_stdio(server: Server[Any], lane: StdioLane | None = None) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel_on_signals, tg.cancel_scope)
        async with pipe_stdio(lane) as (read, write):
            await server.run(read, write, _init_options(server))
        tg.cancel_scope.cancel()


class BearerAuth:
    """Every path but the public ones needs ``Authorization: Bearer <token>`` of a known agent.

    The agent's name is passed on in ``x-bosun-agent`` (any such header from the client is dropped
    first), and each HTTP session is bound to the agent that opened it: a session id presented
    with another agent's token is refused. Hand-written because it is a few lines and the checks
    are the whole point; Starlette's AuthenticationMiddleware would add classes and do none of them.
    """

    def __init__(self, app: ASGIApp, directory: Directory, operator_token: str) -> None:
        self.app = app
        self.directory = directory
        self._operator = token_hash(operator_token)
        self._sessions: dict[bytes, str] = {}  # mcp-session-id -> the agent that opened it

    def _authenticate(self, token: str) -> str | None:
        if hmac.compare_digest(token_hash(token), self._operator):
            return OPERATOR
        return self.directory.authenticate(token)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, error: str, hint: str) -> None:
        headers = {"WWW-Authenticate": 'Bearer realm="bosun"'} if status == 401 else {}
        await JSONResponse({"error": error, "hint": hint}, status_code=status, headers=headers)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        headers = first_headers(scope)
        bearer = headers.get(b"authorization", b"")
        agent = self._authenticate(bearer[7:].decode(errors="replace")) if bearer.startswith(b"Bearer ") else None
        if agent is None:
            hint = "send Authorization: Bearer <an agent's token, or BOSUN_HOME/gateway.token>"
            await self._refuse(scope, receive, send, 401, "unauthorized", hint)
            return
        session = headers.get(b"mcp-session-id")
        owner = self._sessions.get(session) if session else None
        if owner is not None and owner != agent:
            log.warning("session of agent %s presented by agent %s: refused", owner, agent)
            await self._refuse(scope, receive, send, 403, "forbidden", "this session belongs to another agent")
            return
        if session and scope["method"] == "DELETE":
            self._sessions.pop(session, None)
        raw = scope["headers"]
        if AGENT_HEADER in headers:
            raw = [(k, v) for k, v in raw if k != AGENT_HEADER]
        headers[AGENT_HEADER] = agent.encode()
        # The headers go on read (the lane's, saving it a second reading) and as a list with the agent's (the SDK's).
        scope = {**scope, "headers": [*raw, (AGENT_HEADER, headers[AGENT_HEADER])], HEADERS: headers}

        if session is not None:
            await self.app(scope, receive, send)
            return

        async def bind(message: Any) -> None:
            if message["type"] == "http.response.start":
                for k, v in message.get("headers", []):
                    if k.lower() == b"mcp-session-id":
                        self._sessions.setdefault(v, agent)
            await send(message)

        await self.app(scope, receive, bind)


def _metrics_route(gateway: Gateway, token: str | None) -> Route:
    async def metrics(request: Request) -> Response:
        # Server and tool names, refusals and secret names are the operator's business, not every agent's.
        agent = request.headers.get(AGENT_HEADER.decode())
        if token is not None and agent != OPERATOR:
            return JSONResponse({"error": "forbidden", "hint": "metrics need the operator's gateway token"}, 403)
        return Response(gateway.metrics.exposition(), media_type=CONTENT_TYPE)

    return Route("/metrics", metrics)


def http_app(
    gateway: Gateway,
    server: Server[Any],
    host: str,
    port: int,
    token: str | None,
    allowed_origins: list[str],
    console_token: str | None = None,
) -> ASGIApp:
    """The HTTP face; ``token`` None means no authentication (loopback testing only). With ``console_token``,
    the console is served under /console, where browsers sign in with that token (no bearer header)."""

    async def healthz(_: Request) -> Response:
        servers = [e.name for e in gateway.enabled_entries()]
        return JSONResponse({"status": "ok", "gateway": gateway.id, "servers": servers})

    local = ["127.0.0.1", "localhost", "[::1]"] + ([host] if host not in ("0.0.0.0", "::") else [])
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{h}:{port}" for h in local],
        allowed_origins=[f"http://{h}:{port}" for h in local] + allowed_origins,
    )
    routes = [Route("/healthz", healthz), _metrics_route(gateway, token)]
    # Idle sessions are ended by the lane, which sees every request; the SDK's timer sees only those it serves.
    app: ASGIApp = server.streamable_http_app(
        host=host, transport_security=security, custom_starlette_routes=routes, session_idle_timeout=None
    )
    app = Lane(app, gateway, security)
    mcp_face = BearerAuth(app, gateway.directory, token) if token else app
    if console_token is None:
        return mcp_face
    from bosun.console.app import console_app  # the console's templates load only when it is served

    return _ConsoleFirst(console_app(gateway, console_token), mcp_face)


class _ConsoleFirst:
    """/console to the console (its own sign-in), everything else to the MCP face and its bearer check."""

    def __init__(self, console: ASGIApp, rest: ASGIApp) -> None:
        self.console, self.rest = console, rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/console" or path.startswith("/console/")):
            # Starlette routes on the path below root_path; the path itself stays whole.
            scope = dict(scope, root_path=scope.get("root_path", "") + "/console", path=path.rstrip("/") + "/"
                         if path == "/console" else path)  # fmt: skip
            await self.console(scope, receive, send)
            return
        await self.rest(scope, receive, send)


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises SIGTERM/SIGINT once it has shut down, which would kill the process
        # before the gateway removes its containers. Shut down the same way, minus the re-raise.
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


class _Embedded(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Served next to a stdio gateway, which owns the signals; cancelling the task stops this server.
        yield


async def serve_metrics(gateway: Gateway, port: int, token: str) -> None:
    """Only ``/metrics``, on loopback, for the operator's token: a stdio gateway's Prometheus endpoint."""
    app = BearerAuth(Starlette(routes=[_metrics_route(gateway, token)]), gateway.directory, token)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off")
    await _Embedded(config).serve()


def http_config(app: ASGIApp, host: str, port: int, lifespan: Literal["on", "off"] = "on") -> uvicorn.Config:
    """How the gateway's HTTP face is served (``bench/peers.py`` serves its canned reply the same way)."""
    # No proxy headers: nothing here reads a client's address, and uvicorn's middleware for them ran on every request.
    return uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan=lifespan,
                          http=CoalescingHttpTools, proxy_headers=False)  # fmt: skip


async def serve_http(
    gateway: Gateway,
    server: Server[Any],
    host: str,
    port: int,
    token: str | None,
    allowed_origins: list[str] | None = None,
    console_token: str | None = None,
) -> None:
    app = http_app(gateway, server, host, port, token, allowed_origins or [], console_token)
    uv = _Uvicorn(http_config(app, host, port))
    state = gateway.home.gateway_file
    state.write_text(json.dumps({"url": f"http://{host}:{port}/mcp", "pid": os.getpid(), "id": gateway.id}))
    try:
        await uv.serve()
    finally:
        if state.exists() and json.loads(state.read_text()).get("pid") == os.getpid():
            state.unlink()
