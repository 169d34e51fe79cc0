"""Remote upstreams: an MCP server someone else runs, reached over streamable HTTP (or the older SSE
transport) with the SDK's client transports. Its headers (say, a bearer token from the secret store)
ride only this connection, and a lost connection is noticed by a ping and reconnected in the
background (see ``Upstream``)."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from bosun.catalog.models import RemoteSource
from bosun.gateway.downstream import Relay
from bosun.gateway.upstream import MAX_MESSAGE, Connector, Link

PING_TIMEOUT_S = 10.0


class MessageTooLarge(httpx2.StreamError):
    """A remote's answer over ``MAX_MESSAGE``: the SDK fails that request with it as a parse error."""


class _Bounded(httpx2.AsyncByteStream):
    def __init__(self, body: httpx2.AsyncByteStream, url: str) -> None:
        self._body = body
        self._url = url

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._body:
            size += len(chunk)
            if size > MAX_MESSAGE:
                raise MessageTooLarge(f"{self._url} answered with over {MAX_MESSAGE >> 20} MiB in one message")
            yield chunk

    async def aclose(self) -> None:
        await self._body.aclose()


class _BoundedBodies(httpx2.AsyncBaseTransport):
    """A remote's answers, each at most ``MAX_MESSAGE`` as a container's line is: the SDK reads a JSON answer
    whole, with no bound of its own (an event stream's events it bounds itself, told the same limit)."""

    def __init__(self, verify: ssl.SSLContext) -> None:
        self._transport = httpx2.AsyncHTTPTransport(verify=verify)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._transport.handle_async_request(request)
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            assert isinstance(response.stream, httpx2.AsyncByteStream)
            response.stream = _Bounded(response.stream, str(request.url))
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()


def tls_context(source: RemoteSource) -> ssl.SSLContext:
    """The system's trusted CAs, plus the entry's own (``ca_file``) for a server with a private CA."""
    context = ssl.create_default_context()
    if source.ca_file is not None:
        context.load_verify_locations(cafile=str(source.ca_file))
    return context


def remote_connector(
    source: RemoteSource, resolve_headers: Callable[[], dict[str, str]], auth: httpx2.Auth | None = None
) -> Connector:
    @contextlib.asynccontextmanager
    async def connect(relay: Relay) -> AsyncIterator[Link]:
        headers = resolve_headers()
        verify = tls_context(source)
        if source.transport == "sse":

            def client(
                headers: dict[str, str] | None = None,
                timeout: httpx2.Timeout | None = None,
                auth: httpx2.Auth | None = None,
            ) -> httpx2.AsyncClient:
                return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, verify=verify)

            async with sse_client(source.url, headers=headers, auth=auth, httpx_client_factory=client) as streams:
                yield Link(streams[0], streams[1], source.url, _unanswered_ping, reconnect=True)
            return
        timeout = httpx2.Timeout(30, read=300)
        async with (
            httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, transport=_BoundedBodies(verify)) as http,
            streamable_http_client(source.url, http_client=http, max_sse_event_size=MAX_MESSAGE) as streams,
        ):
            yield Link(streams[0], streams[1], source.url, _unanswered_ping, reconnect=True)

    return connect


async def _unanswered_ping(session: ClientSession) -> str | None:
    try:
        with anyio.fail_after(PING_TIMEOUT_S):
            await session.send_ping()
    except Exception as e:
        return f"the server does not answer ({type(e).__name__}: {e}); reconnecting"
    return None
