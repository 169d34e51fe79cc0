"""The MCP face of the gateway: one SDK ``Server`` whose handlers route into ``Gateway``."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import weakref
from typing import Any

import mcp.types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.dispatcher import ProgressFnT
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

import bosun
from bosun.gateway.agents import OPERATOR
from bosun.gateway.core import Gateway
from bosun.gateway.downstream import Downstream
from bosun.gateway.transports import AGENT_HEADER

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
    return "local"


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


def build_server(gateway: Gateway, local_agent: str = OPERATOR) -> Server[Any]:
    """The SDK server for ``gateway``; a stdio client is ``local_agent``, HTTP ones bring a token."""
    # Connections, not sessions: a session object lives for one request only.
    connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def who(ctx: Ctx) -> str:
        client = client_key(ctx)
        gateway.bind(client, agent_of(ctx, local_agent))
        return client

    async def tools_changed() -> None:
        for conn in list(connections):
            with contextlib.suppress(Exception):
                await conn.send_tool_list_changed()

    gateway.listeners.append(tools_changed)

    async def list_tools(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        connections.add(connection_of(ctx))
        return types.ListToolsResult(tools=await gateway.list_tools(who(ctx)))

    async def call_tool(
        ctx: Ctx, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        downstream = Downstream(ctx.session, ctx.request_id)
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return await gateway.call_tool_bridged(who(ctx), params, _progress_forwarder(ctx), downstream)
        return await gateway.call_tool(who(ctx), params.name, params.arguments, _progress_forwarder(ctx), downstream)

    async def list_prompts(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=await gateway.list_prompts(who(ctx)))

    async def get_prompt(ctx: Ctx, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        return await gateway.get_prompt(who(ctx), params.name, params.arguments)

    async def list_resources(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=await gateway.list_resources(who(ctx)))

    async def list_templates(
        ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=await gateway.list_resource_templates(who(ctx)))

    async def read_resource(ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        return await gateway.read_resource(who(ctx), str(params.uri))

    async def complete(ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
        return await gateway.complete(who(ctx), params)

    return Server(
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
    )
