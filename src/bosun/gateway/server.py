"""The MCP face of the gateway: one SDK ``Server`` whose handlers route into ``Gateway``."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import mcp.types as types
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

import bosun
from bosun.gateway.agents import OPERATOR
from bosun.gateway.core import Gateway
from bosun.gateway.downstream import Downstream
from bosun.gateway.lane import AGENT_HEADER, STDIO_CLIENT
from bosun.gateway.names import Naming

log = logging.getLogger("bosun.gateway")

Ctx = ServerRequestContext[Any, Any]


def connection_of(ctx: Ctx) -> object:
    """The client connection behind a request.

    SDK 2.x builds a new ``ServerSession`` per request, so only the connection identifies a
    client across requests; the SDK has no public accessor for it from a handler's context yet.
    """
    return getattr(ctx.session, "_connection", ctx.session)


def client_key(ctx: Ctx) -> str:
    """Who is asking: the HTTP session id, else the bearer identity (stateless HTTP), else the one local client.

    A stdio gateway serves exactly one client, and 2026-era requests each arrive on a
    connection of their own, so neither a session nor a connection object identifies it.
    """
    headers = getattr(ctx.request, "headers", None)
    if headers is not None:
        if sid := headers.get("mcp-session-id"):
            return f"http:{sid}"
        auth = headers.get("authorization", "")
        return "bearer:" + hashlib.sha256(auth.encode()).hexdigest()[:16]
    return STDIO_CLIENT


def _progress_forwarder(ctx: Ctx) -> ProgressFnT | None:
    token = ctx.meta.get("progress_token") if isinstance(ctx.meta, dict) else getattr(ctx.meta, "progress_token", None)
    if token is None:
        return None

    async def forward(progress: float, total: float | None, message: str | None) -> None:
        with contextlib.suppress(Exception):
            await ctx.session.send_progress_notification(
                token, progress, total, message, related_request_id=str(ctx.request_id)
            )

    return forward


def agent_of(ctx: Ctx, local_agent: str) -> str:
    """The authenticated agent (set by the HTTP auth layer, never by the client), or the stdio one."""
    headers = getattr(ctx.request, "headers", None)
    if headers is None:
        return local_agent
    return str(headers.get(AGENT_HEADER.decode(), "unauthenticated"))


# Requests whose handlers audit themselves; the middleware audits the handshake and what never reached one.
_HANDLERS_AUDIT = frozenset({"tools/list", "tools/call", "prompts/get", "resources/read"})


def _client_info(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a client says of itself at ``initialize``: shapes and names only, each bounded."""
    params = params or {}
    info = params.get("clientInfo")
    info = info if isinstance(info, dict) else {}
    capabilities = params.get("capabilities")
    capabilities = capabilities if isinstance(capabilities, dict) else {}
    return {
        "client": str(info.get("name", ""))[:100],
        "client_version": str(info.get("version", ""))[:50],
        "protocol": str(params.get("protocolVersion", ""))[:50],
        "capabilities": sorted(str(c)[:50] for c in capabilities)[:20],
    }


class AuditMiddleware:
    """Audit ``initialize``, and every request refused before a handler ran (malformed params, an
    unknown method): bad input is recorded like any other request, and answered with a clear error."""

    def __init__(self, gateway: Gateway, who: Callable[[Ctx], str]) -> None:
        self.gateway = gateway
        self.who = who

    async def __call__(self, ctx: Ctx, call_next: CallNext) -> HandlerResult:
        if ctx.request_id is None:
            return await call_next(ctx)
        if ctx.method == "initialize":
            async with self.gateway.audited("initialize", self.who(ctx), detail=_client_info(ctx.params)):
                return await call_next(ctx)
        try:
            return await call_next(ctx)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(map(str, first["loc"])) or "params"
            await self._refused(ctx, f"invalid params ({e.error_count()} error(s)); first at {where}: {first['msg']}")
            raise
        except MCPError as e:
            if ctx.method not in _HANDLERS_AUDIT:
                await self._refused(ctx, str(e))
            raise

    async def _refused(self, ctx: Ctx, reason: str) -> None:
        async with self.gateway.audited(ctx.method[:100], self.who(ctx)) as note:
            note.update(decision="deny", outcome="refused", reason=reason[:500])


def build_server(gateway: Gateway, local_agent: str = OPERATOR) -> Server[Any]:
    """The SDK server for ``gateway``; a stdio client is ``local_agent``, HTTP ones bring a token."""
    naming = Naming(gateway.only)
    # Connections, not sessions: a session object lives for one request only.
    connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def who(ctx: Ctx) -> str:
        client = client_key(ctx)
        gateway.bind(client, agent_of(ctx, local_agent))
        return client

    def downstream(ctx: Ctx) -> Downstream:
        return Downstream(ctx.session, ctx.request_id, log_level=gateway.log_levels.get(client_key(ctx)))

    async def tools_changed() -> None:
        for conn in list(connections):
            with contextlib.suppress(Exception):
                await conn.send_tool_list_changed()

    gateway.listeners.append(tools_changed)

    async def list_tools(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        connections.add(connection_of(ctx))
        tools = await gateway.list_tools(who(ctx))
        return types.ListToolsResult(tools=[t.model_copy(update={"name": naming.shown(t.name)}) for t in tools])

    async def call_tool(
        ctx: Ctx, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        to = downstream(ctx)
        params = params.model_copy(update={"name": naming.public(params.name)})
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return await gateway.call_tool_bridged(who(ctx), params, _progress_forwarder(ctx), to)
        return await gateway.call_tool(who(ctx), params.name, params.arguments, _progress_forwarder(ctx), to)

    async def list_prompts(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        prompts = await gateway.list_prompts(who(ctx))
        return types.ListPromptsResult(prompts=[p.model_copy(update={"name": naming.shown(p.name)}) for p in prompts])

    async def get_prompt(ctx: Ctx, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        return await gateway.get_prompt(who(ctx), naming.public(params.name), params.arguments)

    async def list_resources(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=await gateway.list_resources(who(ctx)))

    async def list_templates(
        ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=await gateway.list_resource_templates(who(ctx)))

    async def read_resource(ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        return await gateway.read_resource(who(ctx), str(params.uri))

    async def set_level(ctx: Ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
        # Applied to the servers' log messages relayed to this client; servers keep their own level, as one
        # shared server serves clients that asked for different levels.
        gateway.log_levels[who(ctx)] = params.level
        return types.EmptyResult()

    async def subscribe(ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        conn = connection_of(ctx)

        async def notify(uri: str) -> None:
            await conn.send_resource_updated(uri)  # type: ignore[attr-defined]

        await gateway.subscribe(who(ctx), str(params.uri), notify)
        return types.EmptyResult()

    async def unsubscribe(ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        await gateway.unsubscribe(who(ctx), str(params.uri))
        return types.EmptyResult()

    async def complete(ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
        if isinstance(params.ref, types.PromptReference):
            ref = params.ref.model_copy(update={"name": naming.public(params.ref.name)})
            params = params.model_copy(update={"ref": ref})
        return await gateway.complete(who(ctx), params)

    server: Server[Any] = Server(
        "bosun",
        version=bosun.__version__,
        title="Bosun gateway",
        instructions="Tools are named <server>__<tool>; each server runs in its own hardened container.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
        on_completion=complete,
        on_set_logging_level=set_level,
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=unsubscribe,
    )
    server.middleware.append(AuditMiddleware(gateway, who))
    return server
