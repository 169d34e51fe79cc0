"""The sandbox's gateway socket: each connection gets its own process, bytes pass both ways, and an agent
cannot make the host start processes without end. `cat` stands in for the gateway (pure relay logic)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bosun.sandbox import relay
from bosun.sandbox.relay import GatewayRelay

pytestmark = pytest.mark.anyio


async def talk(path: Path, line: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(line)
    writer.write_eof()  # the client's end: the "gateway" answers what it has, then ends
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_each_connection_is_served_by_its_own_process(tmp_path: Path) -> None:
    socket_path = tmp_path / "gateway.sock"
    async with GatewayRelay(socket_path, "sandbox", tmp_path / "log", command=["cat"]) as served:
        assert socket_path.stat().st_mode & 0o777 == 0o666
        answers = await asyncio.gather(*(talk(socket_path, f"hello {i}\n".encode()) for i in range(3)))
        assert answers == [b"hello 0\n", b"hello 1\n", b"hello 2\n"]
        assert len(served._children) == 4  # three served, one started ahead for the next
    assert not socket_path.exists()


async def test_connections_beyond_the_cap_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "MAX_CLIENTS", 2)
    socket_path = tmp_path / "gateway.sock"
    async with GatewayRelay(socket_path, "sandbox", tmp_path / "log", command=["cat"]):
        held = [await asyncio.open_unix_connection(str(socket_path)) for _ in range(2)]
        for _reader, writer in held:
            writer.write(b"ping\n")
        assert [await r.readline() for r, _w in held] == [b"ping\n", b"ping\n"]  # both are served
        refused_reader, _ = await asyncio.open_unix_connection(str(socket_path))
        assert await asyncio.wait_for(refused_reader.read(), 10) == b""  # closed at once: no third process
        for _reader, writer in held:
            writer.close()
