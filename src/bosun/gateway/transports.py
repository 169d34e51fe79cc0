"""Serving the gateway over stdio and over streamable HTTP (bearer token, Origin checks, /healthz)."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import anyio
import uvicorn
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bosun.gateway.core import Gateway

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


async def serve_stdio(server: Server[Any]) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel_on_signals, tg.cancel_scope)
        async with stdio_server() as (read, write):
            await server.run(read, write, _init_options(server))
        tg.cancel_scope.cancel()


class BearerAuth:
    """Every path but the public ones needs ``Authorization: Bearer <token>``.

    Hand-written because it is ten lines and constant-time comparison is the whole point;
    Starlette's AuthenticationMiddleware would add a backend class and user objects for nothing.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            got = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(got, self._expected):
                response = JSONResponse(
                    {
                        "error": "unauthorized",
                        "hint": "send Authorization: Bearer <token from BOSUN_HOME/gateway.token>",
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="bosun"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_app(
    gateway: Gateway, server: Server[Any], host: str, port: int, token: str | None, allowed_origins: list[str]
) -> ASGIApp:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "gateway": gateway.id, "servers": gateway.settings.enabled()})

    local = ["127.0.0.1", "localhost", "[::1]"] + ([host] if host not in ("0.0.0.0", "::") else [])
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{h}:{port}" for h in local],
        allowed_origins=[f"http://{h}:{port}" for h in local] + allowed_origins,
    )
    app = server.streamable_http_app(
        host=host, transport_security=security, custom_starlette_routes=[Route("/healthz", healthz)]
    )
    return BearerAuth(app, token) if token else app


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


async def serve_http(
    gateway: Gateway,
    server: Server[Any],
    host: str,
    port: int,
    token: str | None,
    allowed_origins: list[str] | None = None,
) -> None:
    app = http_app(gateway, server, host, port, token, allowed_origins or [])
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    uv = _Uvicorn(config)
    state = gateway.home.gateway_file
    state.write_text(json.dumps({"url": f"http://{host}:{port}/mcp", "pid": os.getpid(), "id": gateway.id}))
    try:
        await uv.serve()
    finally:
        if state.exists() and json.loads(state.read_text()).get("pid") == os.getpid():
            state.unlink()
