"""Credential routes: the egress proxy puts a real API key on requests to the one host it is bound to.

A sandboxed agent holds a sentinel, never the key. Its base URL (``ANTHROPIC_BASE_URL``,
``OPENAI_BASE_URL``) points at a route of its own on the proxy: plain HTTP on the sandbox's internal
network, which only the agent and the proxy share. The proxy replaces the bound header with the real
key, read from the secrets Bosun delivered to the proxy's container, and speaks TLS to the upstream
itself, verifying its certificate. So the key never enters the sandbox, and a request to any other
host leaves with whatever the agent put on it: the sentinel, worth nothing.

Why a route rather than TLS interception with a per-sandbox CA: nothing has to be trusted inside the
sandbox, no certificate is minted, and the proxy handles only the requests meant for the bound host
(every other HTTPS connection stays end-to-end encrypted through ``CONNECT``).

Standard library only: this module runs inside the proxy container.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bosun.egress.rules import Denied

SECRETS_DIR = Path("/run/secrets")  # where bosun-entry writes what Bosun sent (images.base.SECRETS_DIR)
_HOP_BY_HOP = ("connection:", "keep-alive:", "proxy-", "host:", "upgrade:")


@dataclass(frozen=True)
class Credential:
    """One route: requests on ``port`` go to ``upstream`` with ``header: prefix + key``."""

    secret: str  # the secret's name in Bosun's store, and its file name under SECRETS_DIR
    port: int
    upstream: str  # https://host[:port][/base-path]
    header: str = "x-api-key"
    prefix: str = ""  # "Bearer " for an Authorization header
    ca: str = ""  # PEM of a private CA the upstream's certificate chains to, besides the public ones

    def __post_init__(self) -> None:
        url = urlsplit(self.upstream)
        if url.scheme != "https" or not url.hostname:
            raise ValueError(f"credential upstream {self.upstream!r} must be an https:// URL")

    @classmethod
    def parse(cls, text: str) -> Credential:
        return cls(**json.loads(text))

    @property
    def host(self) -> str:
        return urlsplit(self.upstream).hostname or ""

    @property
    def upstream_port(self) -> int:
        return urlsplit(self.upstream).port or 443

    @functools.cached_property
    def tls(self) -> ssl.SSLContext:
        # Once per route: loading the system's CA bundle costs milliseconds, and every request would pay it.
        context = ssl.create_default_context()
        if self.ca:
            context.load_verify_locations(cadata=self.ca)
        return context

    def key(self) -> str:
        return (SECRETS_DIR / self.secret).read_text()


def rewrite_request(head: bytes, credential: Credential, key: str) -> tuple[bytes, str, str]:
    """The request head as it leaves for the upstream, with the method and path (for the log).

    The bound header is replaced whatever it held, as a real key would be if the agent had one; hop-by-hop
    headers are dropped and the connection closes after one exchange, so the proxy never has to find where
    a body ends."""
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    if target.startswith("http://"):  # absolute form, from a client that proxies even its base URL
        asked = urlsplit(target)
        target = (asked.path or "/") + (f"?{asked.query}" if asked.query else "")
    if not target.startswith("/"):
        raise ValueError("a credential route takes origin-form requests (GET /path), as from a base URL")
    base = urlsplit(credential.upstream)
    host = base.netloc.rpartition("@")[2]
    bound = credential.header.lower() + ":"
    upgrade = [h for h in lines if h.lower().startswith("upgrade:")]
    kept = [h for h in lines if h and not h.lower().startswith((bound, *_HOP_BY_HOP))]
    path = base.path.rstrip("/") + target
    out = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"{credential.header}: {credential.prefix}{key}", *kept]
    # A WebSocket (Codex's Responses API) stays one connection for its life, so it keeps its upgrade.
    ending = [*upgrade[:1], "Connection: Upgrade"] if upgrade else ["Connection: close"]
    return "\r\n".join([*out, *ending, "", ""]).encode("latin-1"), method, path.partition("?")[0]


def rewrite_response_head(head: bytes) -> bytes:
    """The upstream's response head with ``Connection: close``: the route serves one exchange per connection."""
    status, *lines = head.decode("latin-1").split("\r\n")
    if status.split(" ")[1:2] == ["101"]:
        return head  # switching protocols: the connection is the client's now
    kept = [h for h in lines if h and not h.lower().startswith(("connection:", "keep-alive:"))]
    return "\r\n".join([status, *kept, "Connection: close", "", ""]).encode("latin-1")


Resolver = Callable[[str, int], Awaitable[list[str]]]
Pipe = Callable[[asyncio.StreamReader, asyncio.StreamWriter, list[int]], Awaitable[None]]
Log = Callable[..., None]


async def serve_route(
    credential: Credential,
    resolve: Resolver,
    pipe: Pipe,
    log: Log,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    head: bytes | None = None,
) -> None:
    """One connection on a credential route: one request out with the real key, its response back.
    ``head`` is the request's head when the forward port already read it."""
    fields: dict[str, object] = {"event": "egress", "host": credential.host, "port": credential.upstream_port,
                                 "credential": credential.secret}  # fmt: skip

    def refuse(status: str, reason: str) -> None:
        log(**fields, allowed=False, injected=False, reason=reason)
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                     f"bosun egress: {reason}\n".encode())  # fmt: skip
        writer.close()

    try:
        if head is None:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        try:
            key = credential.key().strip()
        except OSError:
            return refuse("502 Bad Gateway", f"the credential {credential.secret} was not delivered to the proxy")
        out_head, method, path = rewrite_request(head, credential, key)
        fields |= {"method": method, "path": path}
        addresses = await resolve(credential.host, credential.upstream_port)
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(addresses[0], credential.upstream_port, ssl=credential.tls,
                                    server_hostname=credential.host), 30)  # fmt: skip
    except ssl.SSLError as e:  # before ValueError: a failed certificate check is both
        return refuse("502 Bad Gateway", f"TLS to {credential.host} failed: {e.reason or e}")
    except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
        return refuse("400 Bad Request", f"malformed request: {e}")
    except (TimeoutError, OSError) as e:
        return refuse("502 Bad Gateway", f"cannot reach {credential.host}: {e}")
    except Denied as e:
        return refuse("403 Forbidden", str(e))
    up_writer.write(out_head)
    up, down = [0], [0]
    # The body goes up while the response head is awaited: the upstream answers only once it has read it.
    sending = asyncio.ensure_future(pipe(reader, up_writer, up))
    try:
        response_head = await asyncio.wait_for(up_reader.readuntil(b"\r\n\r\n"), 600)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        up_writer.close()
        sending.cancel()
        return refuse("502 Bad Gateway", f"{credential.host} sent no response")
    writer.write(rewrite_response_head(response_head))
    status = response_head.split(b" ", 2)[1].decode("latin-1") if response_head.count(b" ") >= 2 else "?"
    await asyncio.gather(sending, pipe(up_reader, writer, down))
    log(**fields, allowed=True, injected=True, status=status, bytes_up=up[0], bytes_down=down[0])
