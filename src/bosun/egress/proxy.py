"""Bosun's egress proxy: the only way out for a server container or agent sandbox allowed any network.

Standard library only, so it runs in ``bosun/base-python`` as one file. Written by hand because
the check that matters happens *between* name resolution and connect (refusing names that
resolve to internal addresses), which off-the-shelf forward proxies do not offer.

It speaks ``CONNECT host:port`` (for HTTPS, so TLS stays end to end) and absolute-form plain
HTTP requests. The proxy resolves names itself; the server container has no resolver. Every
decision is one JSON line on stdout: host, port, allowed or not, why, and bytes each way.
For agent sandboxes it also serves credential routes (``bosun.egress.inject``): the one place a
real API key is put on a request.

    python3 -m bosun.egress.proxy --listen 0.0.0.0:3128 --allow api.example.com --allow '*.example.org:8443'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import socket
import sys
import time
from collections.abc import Awaitable
from typing import Protocol
from urllib.parse import urlsplit

from bosun.egress.inject import Credential, serve_route
from bosun.egress.rules import Allowlist, Denied, is_ip_literal, refusal

MAX_HEAD = 64 * 1024
IDLE_TIMEOUT_S = 300


def log(**fields: object) -> None:
    print(json.dumps({"ts": round(time.time(), 3), **fields}), flush=True)


async def resolve_checked(allow: Allowlist, host: str, port: int) -> list[str]:
    """Addresses the proxy may connect to for host:port; raises Denied with the reason."""
    if not allow.allows(host, port):
        raise Denied("not in the allowlist")
    literal = allow.names_literal(host)
    if is_ip_literal(host):
        if not literal:
            raise Denied("IP literals are allowed only when the allowlist names them")
        addresses = [host.strip("[]")]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise Denied(f"name does not resolve: {e}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    # Every address must pass: with a mix, DNS could hand a client a different one next time.
    for address in addresses:
        why = refusal(address, explicitly_allowed_literal=literal)
        if why:
            raise Denied(f"{host} resolves to {address}: {why}")
    return addresses


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: list[int]) -> None:
    try:
        while data := await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT_S):
            counter[0] += len(data)
            writer.write(data)
            await writer.drain()
    except (TimeoutError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


class Route(Protocol):
    def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes | None = None
                 ) -> Awaitable[None]: ...  # fmt: skip


class Proxy:
    def __init__(self, allow: Allowlist, sentinel: str = "", routes: dict[int, Route] | None = None) -> None:
        self.allow = allow
        self.sentinel = sentinel.encode()
        self.routes = routes or {}

    def _route_for(self, writer: asyncio.StreamWriter, host: str, port: int) -> Route | None:
        """A credential route asked for through the forward port: some clients (Codex's WebSocket) proxy every
        connection, NO_PROXY or not. The proxy's own address on the client's network is the one it was reached at."""
        own = writer.get_extra_info("sockname")
        return self.routes.get(port) if own and host == own[0] else None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port, method = "?", 0, "?"
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            if len(head) > MAX_HEAD:
                raise Denied("request head too large")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ", 2)
            if method == "CONNECT":
                host, _, port_text = target.rpartition(":")
                port = int(port_text)
                body_prefix = b""
                if route := self._route_for(writer, host, port):
                    writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    return await route(reader, writer, None)
            else:
                url = urlsplit(target)
                if url.scheme != "http" or not url.hostname:
                    raise Denied("only CONNECT or absolute http:// requests go through this proxy")
                host, port = url.hostname, url.port or 80
                if route := self._route_for(writer, host, port):
                    return await route(reader, writer, head)
                path = (url.path or "/") + (f"?{url.query}" if url.query else "")
                kept = [h for h in header_lines if h and not h.lower().startswith(("proxy-", "connection:"))]
                body_prefix = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""]).encode(
                    "latin-1"
                )
                if self.sentinel and self.sentinel in head:
                    # It leaves as it came: the sentinel is worth nothing, and the log shows who tried.
                    log(event="sentinel", host=host, port=port, method=method, reason="the sentinel left unreplaced")
            addresses = await resolve_checked(self.allow, host, port)
        except Denied as e:
            log(event="egress", host=host, port=port, method=method, allowed=False, reason=str(e))
            writer.write(f"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n\r\nbosun egress: {e}\n".encode())
            with contextlib.suppress(OSError):
                await writer.drain()
                writer.close()
            return
        except (TimeoutError, ValueError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            log(event="egress", host=host, port=port, method=method, allowed=False, reason="malformed request")
            with contextlib.suppress(OSError):
                writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(addresses[0], port), 15)
        except (TimeoutError, OSError) as e:
            log(event="egress", host=host, port=port, method=method, allowed=True, reason=f"connect failed: {e}")
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            with contextlib.suppress(OSError):
                writer.close()
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        else:
            up_writer.write(body_prefix)
        up, down = [0], [0]
        await asyncio.gather(pipe(reader, up_writer, up), pipe(up_reader, writer, down))
        log(event="egress", host=host, port=port, method=method, allowed=True, address=addresses[0],
            bytes_up=up[0], bytes_down=down[0])  # fmt: skip


async def serve(listen: str, allow: Allowlist, credentials: list[Credential], sentinel: str = "") -> None:
    host, _, port = listen.rpartition(":")
    routes: dict[int, Route] = {
        c.port: functools.partial(serve_route, c, functools.partial(resolve_checked, allow), pipe, log)
        for c in credentials
    }
    proxy = Proxy(allow, sentinel, routes)
    servers = [await asyncio.start_server(proxy.handle, host or "0.0.0.0", int(port), limit=MAX_HEAD)]
    for route_port, route in routes.items():
        servers.append(await asyncio.start_server(route, host or "0.0.0.0", route_port, limit=MAX_HEAD))
    log(event="listening", address=listen, allow=[f"{p.host}:{'/'.join(map(str, p.ports))}" for p in allow.patterns],
        routes={c.port: c.upstream for c in credentials})  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            await stack.enter_async_context(server)
        await asyncio.gather(*(server.serve_forever() for server in servers))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Bosun egress proxy")
    parser.add_argument("--listen", default="0.0.0.0:3128")
    parser.add_argument("--allow", action="append", default=[], help="host[:port] or *.domain[:port]")
    parser.add_argument(
        "--credential",
        action="append",
        default=[],
        type=Credential.parse,
        help='a credential route, as JSON: {"secret": ..., "port": ..., "upstream": "https://..."}',
    )
    parser.add_argument("--sentinel", default="", help="the stand-in the agent holds; logged when seen leaving")
    args = parser.parse_args(argv)
    # A credential's upstream is reachable by its route, so it is allowed; checks on its addresses still apply.
    allow = Allowlist(args.allow + [f"{c.host}:{c.upstream_port}" for c in args.credential])
    try:
        asyncio.run(serve(args.listen, allow, args.credential, args.sentinel))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
