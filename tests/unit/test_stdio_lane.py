"""Which stdio messages the lane takes from the SDK (the serving itself is tested end to end in
tests/integration/test_gateway.py, over stdio and HTTP)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anyio

from bosun.gateway.lane import StdioLane


async def _write(data: bytes) -> None:
    return None


def _lane() -> StdioLane:
    return StdioLane(SimpleNamespace(only=None), "ci-bot")  # type: ignore[arg-type]


def _initialize(version: str) -> dict[str, Any]:
    params = {"protocolVersion": version, "capabilities": {"sampling": {}}, "clientInfo": {"name": "t", "version": "1"}}
    return {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}


CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "time__now", "arguments": {}}}


def test_tool_calls_are_taken_only_after_a_handshake_era_initialize() -> None:
    lane = _lane()
    assert lane.take(CALL, _write) is None  # no handshake yet: the SDK answers
    assert lane.take(_initialize("2025-06-18"), _write) is None  # the handshake itself is the SDK's
    assert lane.take(CALL, _write) is not None
    assert lane.session is not None and lane.session.capabilities.sampling is not None


def test_a_2026_era_client_and_anything_malformed_stay_with_the_sdk() -> None:
    lane = _lane()
    lane.take(_initialize("2026-07-28"), _write)
    assert lane.take(CALL, _write) is None
    lane.take(_initialize("2025-06-18"), _write)
    for message in (
        {**CALL, "params": {"arguments": {}}},  # no name: the SDK refuses it, and the audit records it
        {**CALL, "id": True},
        {"jsonrpc": "2.0", "id": 8, "method": "tools/list"},
        [CALL],
        {"jsonrpc": "2.0", "id": "bosun-lane-99", "result": {}},  # an answer to no request of the lane's
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}},  # not in flight
    ):
        assert lane.take(message, _write) is None, message


def test_the_clients_answer_to_a_lane_request_is_taken() -> None:
    lane = _lane()
    lane.take(_initialize("2025-06-18"), _write)
    assert lane.session is not None
    answered, answers = lane.session.asked["bosun-lane-1"] = (anyio.Event(), [])
    assert lane.take({"jsonrpc": "2.0", "id": "bosun-lane-1", "result": {"ok": True}}, _write) is not None
    assert answered.is_set() and answers == [{"jsonrpc": "2.0", "id": "bosun-lane-1", "result": {"ok": True}}]
