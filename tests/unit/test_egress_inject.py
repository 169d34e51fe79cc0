"""Credential routes, on loopback with real sockets and real TLS: the key goes to the bound upstream only."""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fixtures.tls import issue

from bosun.egress import inject
from bosun.egress.inject import Credential, rewrite_request, rewrite_response_head, serve_route
from bosun.egress.proxy import Proxy, log, pipe
from bosun.egress.rules import Allowlist, Denied

pytestmark = pytest.mark.anyio
KEY = "sk-real-key-0123456789"


@dataclass
class Upstream:
    port: int
    ca: str
    heads: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[Upstream]:
    """An https server on 127.0.0.1 with a private CA's certificate, answering like an LLM API."""
    ca, cert, key = issue(tmp_path, "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    seen = Upstream(0, ca.read_text())

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = next((int(h.split(":")[1]) for h in head.split("\r\n") if h.lower().startswith("content-length")), 0)
        seen.heads.append(head)
        seen.bodies.append(await reader.readexactly(length))
        body = b'{"answer": 42}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    seen.port = server.sockets[0].getsockname()[1]
    async with server:
        yield seen


@pytest.fixture
def delivered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "llm-key").write_text(KEY)
    monkeypatch.setattr(inject, "SECRETS_DIR", secrets)
    return secrets


async def loopback(host: str, port: int) -> list[str]:
    # The proxy's real resolver refuses loopback; these tests are the one place it must be reached.
    if host != "127.0.0.1":
        raise Denied("not in the allowlist")
    return [host]


async def through_route(credential: Credential, request: bytes) -> str:
    route = functools.partial(serve_route, credential, loopback, pipe, log)
    server = await asyncio.start_server(route, "127.0.0.1", 0)
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    return answer.decode()


async def decisions(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    """The route's log lines; it logs once both directions have ended, just after the client saw the end."""
    seen: list[dict[str, object]] = []
    for _ in range(100):
        seen += [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        if seen:
            return seen
        await asyncio.sleep(0.05)
    return seen


POST = (b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: 10.0.0.2:3129\r\nx-api-key: sk-ant-bosun-sentinel\r\n"
        b"Content-Type: application/json\r\nContent-Length: 11\r\nConnection: keep-alive\r\n\r\n"
        b'{"q": "hi"}')  # fmt: skip


async def test_the_real_key_replaces_the_sentinel_on_the_way_to_the_bound_upstream(
    upstream: Upstream, delivered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    credential = Credential("llm-key", 0, f"https://127.0.0.1:{upstream.port}/api", ca=upstream.ca)
    answer = await through_route(credential, POST)
    assert answer.startswith("HTTP/1.1 200") and answer.endswith('{"answer": 42}')
    assert "Connection: close" in answer and "keep-alive" not in answer  # one exchange per connection
    [head] = upstream.heads
    assert head.startswith("POST /api/v1/messages?beta=true HTTP/1.1\r\n")
    assert f"x-api-key: {KEY}\r\n" in head and "sentinel" not in head
    assert f"Host: 127.0.0.1:{upstream.port}\r\n" in head
    assert upstream.bodies == [b'{"q": "hi"}']
    [decision] = await decisions(capsys)
    assert decision["injected"] is True and decision["credential"] == "llm-key" and decision["status"] == "200"
    assert decision["path"] == "/api/v1/messages" and KEY not in json.dumps(decision)


async def test_a_bearer_header_gets_its_prefix() -> None:
    credential = Credential("k", 1, "https://api.example.test", header="Authorization", prefix="Bearer ")
    head, _, _ = rewrite_request(b"GET /v1/models HTTP/1.1\r\nauthorization: Bearer sentinel\r\n\r\n", credential, "s3")
    assert b"Authorization: Bearer s3\r\n" in head and b"sentinel" not in head


async def test_an_upstream_whose_certificate_does_not_verify_gets_nothing(
    upstream: Upstream, delivered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    credential = Credential("llm-key", 0, f"https://127.0.0.1:{upstream.port}")  # public CAs only
    answer = await through_route(credential, POST)
    assert answer.startswith("HTTP/1.1 502") and "TLS to 127.0.0.1 failed" in answer
    assert upstream.heads == []
    assert (await decisions(capsys))[0]["injected"] is False


async def test_a_refused_upstream_or_a_missing_key_is_an_error_not_a_crash(
    upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inject, "SECRETS_DIR", tmp_path / "nothing")
    missing = await through_route(Credential("llm-key", 0, f"https://127.0.0.1:{upstream.port}"), POST)
    assert missing.startswith("HTTP/1.1 502") and "was not delivered" in missing
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "llm-key").write_text(KEY)
    elsewhere = Credential("llm-key", 0, "https://internal.example.test")
    refused = await through_route(elsewhere, POST)
    assert refused.startswith("HTTP/1.1 403") and "not in the allowlist" in refused
    garbage = await through_route(elsewhere, b"GET x HTTP/1.1\r\n\r\n")
    assert garbage.startswith("HTTP/1.1 400")


async def test_a_client_that_proxies_its_base_url_still_gets_the_route(upstream: Upstream, delivered: Path) -> None:
    """Codex's WebSocket client sends every connection to the proxy, its base URL's too: by CONNECT, or as an
    absolute-form request. Both reach the route (the proxy's own address and a route's port), not the outside."""
    credential = Credential("llm-key", 4321, f"https://127.0.0.1:{upstream.port}", ca=upstream.ca)
    routes = {4321: functools.partial(serve_route, credential, loopback, pipe, log)}
    server = await asyncio.start_server(Proxy(Allowlist([]), routes=routes).handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        for head in (POST.replace(b"POST /v1", b"POST http://127.0.0.1:4321/v1"),
                     b"CONNECT 127.0.0.1:4321 HTTP/1.1\r\n\r\n" + POST):  # fmt: skip
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head)
            answer = (await asyncio.wait_for(reader.read(), 10)).decode()
            writer.close()
            assert answer.endswith('{"answer": 42}'), answer
    assert [h.split("\r\n")[0] for h in upstream.heads] == ["POST /v1/messages?beta=true HTTP/1.1"] * 2
    assert all(f"x-api-key: {KEY}" in h for h in upstream.heads)


def test_a_websocket_upgrade_keeps_its_connection() -> None:
    credential = Credential("k", 1, "https://api.example.test/v1", header="Authorization", prefix="Bearer ")
    head, _, path = rewrite_request(
        b"GET /responses HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\n\r\n",
        credential, "s3",
    )  # fmt: skip
    assert path == "/v1/responses"
    assert head.endswith(b"Sec-WebSocket-Key: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    assert rewrite_response_head(switching) == switching


def test_only_https_upstreams_are_accepted() -> None:
    with pytest.raises(ValueError, match="must be an https:// URL"):
        Credential.parse('{"secret": "k", "port": 3129, "upstream": "http://api.example.test"}')
