"""The egress proxy's refusals, on loopback with real sockets (no traffic leaves this machine)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from bosun.egress.proxy import Proxy
from bosun.egress.rules import Allowlist

pytestmark = pytest.mark.anyio


@pytest.fixture
async def proxy(capsys: pytest.CaptureFixture[str]) -> AsyncIterator[int]:
    allow = Allowlist(["localhost:9", "127.0.0.1:9"])
    server = await asyncio.start_server(Proxy(allow).handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def ask(port: int, head: bytes) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data.decode()


def decisions(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


async def test_host_not_in_allowlist_is_refused_and_logged(proxy: int, capsys: pytest.CaptureFixture[str]) -> None:
    out = await ask(proxy, b"CONNECT other.internal.test:443 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith("HTTP/1.1 403") and "not in the allowlist" in out
    [d] = decisions(capsys)
    assert d["host"] == "other.internal.test" and d["allowed"] is False


async def test_allowed_name_resolving_to_loopback_is_refused(proxy: int, capsys: pytest.CaptureFixture[str]) -> None:
    out = await ask(proxy, b"CONNECT localhost:9 HTTP/1.1\r\n\r\n")
    assert out.startswith("HTTP/1.1 403") and "loopback" in out


async def test_loopback_literal_is_refused_even_when_allowlisted(proxy: int) -> None:
    out = await ask(proxy, b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert out.startswith("HTTP/1.1 403") and "loopback" in out


@pytest.mark.parametrize(
    "head",
    [b"garbage\r\n\r\n", b"GET /relative HTTP/1.1\r\n\r\n", b"CONNECT nohostport HTTP/1.1\r\n\r\n"],
)
async def test_malformed_requests_get_an_error_not_a_crash(proxy: int, head: bytes) -> None:
    out = await ask(proxy, head)
    assert out.startswith(("HTTP/1.1 400", "HTTP/1.1 403"))
    # and the proxy still answers the next client
    assert (await ask(proxy, b"CONNECT other.internal.test:443 HTTP/1.1\r\n\r\n")).startswith("HTTP/1.1 403")
