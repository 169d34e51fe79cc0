"""The HTTP lane's session bookkeeping, with a recording ASGI app in place of the SDK's (pure logic).

Tool calls through the lane, with progress, logs, server requests and cancellation, run against a real
gateway in tests/integration/test_gateway.py and in the conformance suite."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

import anyio
import mcp.types as types
import pytest
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.message import ServerMessageMetadata

from bosun.gateway.core import Gateway
from bosun.gateway.lane import Lane, LaneSession, _Reply

pytestmark = pytest.mark.anyio


class App:
    """Answers every request with ``status`` and a session id, and records what reached it."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.seen: list[tuple[str, dict[bytes, bytes], bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append((scope["method"], dict(scope["headers"]), body))
        await send({"type": "http.response.start", "status": self.status, "headers": [(b"mcp-session-id", b"s1")]})
        await send({"type": "http.response.body", "body": b"{}"})


def _lane(app: App, idle_s: float = 1800) -> Lane:
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return Lane(app, cast(Gateway, SimpleNamespace(only=None)), security, idle_s=idle_s)


async def _post(lane: Lane, message: dict[str, Any], session: str | None = None) -> list[dict[str, Any]]:
    headers = [(b"content-type", b"application/json"), (b"accept", b"application/json, text/event-stream")]
    headers += [(b"mcp-session-id", session.encode())] if session else []
    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": headers}
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": json.dumps(message).encode(), "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await lane(scope, receive, send)
    return sent


async def test_a_session_is_learned_at_initialize_and_forgotten_when_the_sdk_no_longer_knows_it() -> None:
    app = App()
    lane = _lane(app)
    info = {"name": "t", "version": "1"}
    hello = {"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}}, "clientInfo": info}
    await _post(lane, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello})
    assert app.seen[0][2].startswith(b'{"jsonrpc"')  # the body read by the lane reached the SDK whole
    session = lane.sessions["s1"]
    assert session.check_client_capability(types.ClientCapabilities(sampling=types.SamplingCapability()))
    assert not session.check_client_capability(types.ClientCapabilities(roots=types.RootsCapability()))
    app.status = 404
    await _post(lane, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session="s1")
    assert "s1" not in lane.sessions


async def test_a_server_request_goes_out_on_the_calls_stream_and_its_answer_comes_back_by_post() -> None:
    app = App()
    lane = _lane(app)
    session = lane.sessions["s1"] = LaneSession("s1", types.ClientCapabilities())
    events: list[dict[str, Any]] = []

    async def stream(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            events.append(json.loads(message["body"].split(b"data: ")[1]))

    session.replies[7] = _Reply(stream, "s1")
    request = types.ListRootsRequest()
    results: list[types.ListRootsResult] = []
    async with anyio.create_task_group() as tg:

        async def ask() -> None:
            metadata = ServerMessageMetadata(related_request_id=7)
            results.append(await session.send_request(request, types.ListRootsResult, metadata=metadata))

        tg.start_soon(ask)
        with anyio.fail_after(5):
            while not events:
                await anyio.sleep(0.01)
        assert events[0]["method"] == "roots/list"
        answer = {"jsonrpc": "2.0", "id": events[0]["id"], "result": {"roots": [{"uri": "file:///w"}]}}
        sent = await _post(lane, answer, session="s1")
        assert sent[0]["status"] == 202
    assert str(results[0].roots[0].uri) == "file:///w"
    assert not app.seen  # neither the answer nor anything else reached the SDK


async def test_an_idle_session_is_ended_in_the_sdk_with_a_delete() -> None:
    app = App()
    lane = _lane(app, idle_s=0.05)
    lane.sessions["s1"] = LaneSession("s1", types.ClientCapabilities())
    busy = lane.sessions["s2"] = LaneSession("s2", types.ClientCapabilities())
    busy.in_flight = 1  # a call (or a GET stream) in flight is not idleness
    async with anyio.create_task_group() as tg:
        tg.start_soon(lane._sweep)
        await anyio.sleep(0.3)
        tg.cancel_scope.cancel()
    assert [(method, headers[b"mcp-session-id"]) for method, headers, _ in app.seen] == [("DELETE", b"s1")]
    assert list(lane.sessions) == ["s2"]
