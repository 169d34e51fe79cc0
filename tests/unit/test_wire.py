"""``Wire``: tool calls written beside the SDK session, their replies matched by id (pure logic, a fake channel)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from bosun.gateway import upstream
from bosun.gateway.upstream import UpstreamError, Wire

pytestmark = pytest.mark.anyio


class Channel:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.arrived = anyio.Event()

    async def send(self, data: bytes) -> None:
        assert data.endswith(b"\n")
        self.sent.append(json.loads(data))
        self.arrived.set()

    async def receive(self) -> bytes:
        raise anyio.EndOfStream

    async def aclose(self) -> None:
        pass


async def _sent(channel: Channel) -> dict[str, Any]:
    await channel.arrived.wait()
    channel.arrived = anyio.Event()
    return channel.sent[-1]


async def test_reply_progress_and_error_are_matched_by_id() -> None:
    channel = Channel()
    wire = Wire(channel, "s")
    seen: list[tuple[float, Any, Any]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        seen.append((done, total, message))

    results: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def call() -> None:
            results.append(await wire.request("tools/call", {"name": "t", "arguments": {}}, on_progress))

        tg.start_soon(call)
        request = await _sent(channel)
        token = request["params"]["_meta"]["progressToken"]
        assert isinstance(request["id"], str) and request["method"] == "tools/call"
        # The session's own traffic (integer ids, other notifications) is not the wire's.
        assert not await wire.take({"jsonrpc": "2.0", "id": 0, "result": {}})
        progress = "notifications/progress"
        assert not await wire.take({"jsonrpc": "2.0", "method": progress, "params": {"progressToken": 7}})
        note = {"progressToken": token, "progress": 1, "total": 2, "message": "half"}
        assert await wire.take({"jsonrpc": "2.0", "method": progress, "params": note})
        assert await wire.take({"jsonrpc": "2.0", "id": request["id"], "result": {"content": []}})
    assert results == [{"content": []}] and seen == [(1.0, 2, "half")]

    async with anyio.create_task_group() as tg:

        async def failing() -> None:
            with pytest.raises(MCPError, match="no such tool"):
                await wire.request("tools/call", {"name": "x"})

        tg.start_soon(failing)
        request = await _sent(channel)
        assert "_meta" not in request["params"]
        await wire.take({"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32602, "message": "no such tool"}})


async def test_a_cancelled_call_is_cancelled_upstream_and_its_late_reply_dropped() -> None:
    channel = Channel()
    wire = Wire(channel, "s")
    async with anyio.create_task_group() as tg:
        tg.start_soon(wire.request, "tools/call", {"name": "slow"})
        request = await _sent(channel)
        tg.cancel_scope.cancel()
    assert channel.sent[-1] == {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                "params": {"requestId": request["id"]}}  # fmt: skip
    assert await wire.take({"jsonrpc": "2.0", "id": request["id"], "result": {}})  # swallowed, not sent to the session


async def test_calls_in_flight_fail_cleanly_when_the_server_goes_away() -> None:
    channel = Channel()
    wire = Wire(channel, "s")
    async with anyio.create_task_group() as tg:

        async def call() -> None:
            with pytest.raises(UpstreamError, match="closed its connection"):
                await wire.request("tools/call", {"name": "t"})

        tg.start_soon(call)
        await _sent(channel)
        wire.close("server 's' closed its connection")
    with pytest.raises(UpstreamError):
        await wire.request("tools/call", {"name": "t"})


class Script:
    """A channel whose server's output arrives in the given pieces, then ends."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)

    async def send(self, data: bytes) -> None:
        pass

    async def receive(self) -> bytes:
        if not self.pieces:
            raise anyio.EndOfStream
        return self.pieces.pop(0)

    async def aclose(self) -> None:
        pass


def _note(n: int) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "method": "notifications/message",
                       "params": {"level": "info", "data": n}}).encode()  # fmt: skip


async def _read(pieces: list[bytes]) -> tuple[list[Any], str | None]:
    channel = Script(pieces)
    wire = Wire(channel, "s")  # type: ignore[arg-type]  # the channel's three methods are all it uses
    async with upstream.channel_transport(channel, "s", wire) as (read, _write):  # type: ignore[arg-type]
        got = [m.message.params["data"] async for m in read]  # type: ignore[union-attr]
    return got, wire.closed


async def test_lines_are_framed_however_the_output_is_cut() -> None:
    one, two, three = _note(1), _note(2), _note(3)
    pieces = [one[:10], one[10:20], one[20:] + b"\n" + two[:5], two[5:] + b"\n\n", three + b"\n"]
    assert await _read(pieces) == ([1, 2, 3], "server 's' closed its connection")


async def test_a_line_with_no_end_in_sight_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "MAX_MESSAGE", 100)
    got, closed = await _read([_note(1) + b"\n" + b"x" * 60, b"x" * 60, _note(2) + b"\n"])
    assert got == [1] and closed is not None and "wrote a line over" in closed
