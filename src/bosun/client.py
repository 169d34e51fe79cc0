"""Reaching a gateway as an MCP client: the running one if there is one, else one in-process."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bosun.gateway.core import Gateway
from bosun.gateway.server import build_server
from bosun.home import Home
from bosun.runtime.docker import DockerBackend


def running_gateway_url(home: Home) -> str | None:
    """The URL a live ``bosun gateway run --transport http`` wrote, if its process still exists."""
    try:
        state = json.loads(home.gateway_file.read_text())
        os.kill(int(state["pid"]), 0)
    except (FileNotFoundError, ValueError, KeyError, ProcessLookupError, PermissionError):
        return None
    return str(state["url"])


def http_client(url: str, token: str, **options: Any) -> Client:
    """An MCP client of the gateway at ``url``; ``options`` go to ``mcp.Client`` (callbacks, mode)."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=300))
    return Client(streamable_http_client(url, http_client=http), **options)


@asynccontextmanager
async def connect(home: Home) -> AsyncIterator[tuple[Client, str]]:
    """A connected client and a word on where it goes ("gateway at URL" or "in-process gateway")."""
    url = running_gateway_url(home)
    async with AsyncExitStack() as stack:
        if url:
            token, _ = home.gateway_token()
            client = await stack.enter_async_context(http_client(url, token))
            yield client, f"gateway at {url}"
            return
        gateway = await stack.enter_async_context(Gateway(home, DockerBackend()))
        client = await stack.enter_async_context(Client(build_server(gateway)))
        yield client, "in-process gateway"
