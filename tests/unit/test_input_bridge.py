"""The InputBridge that carries server requests to 2026-era clients across retries (pure logic)."""

from __future__ import annotations

import anyio
import mcp.types as types
import pytest
from mcp.shared.exceptions import MCPError

from bosun.gateway.downstream import InputBridge

pytestmark = pytest.mark.anyio

SAMPLE = types.CreateMessageRequest(
    params=types.CreateMessageRequestParams(
        messages=[types.SamplingMessage(role="user", content=types.TextContent(type="text", text="q"))],
        max_tokens=5,
    )
)
ANSWER = types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="a"), model="m")


async def test_request_then_answer_then_outcome() -> None:
    bridge = InputBridge("alice")
    got: list[object] = []

    async def upstream() -> None:
        got.append(await bridge.ask(SAMPLE, types.CreateMessageResult))
        bridge.finish(types.CallToolResult(content=[types.TextContent(type="text", text="done")]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(upstream)
        pending = await bridge.next()
        assert isinstance(pending, dict) and list(pending.values()) == [SAMPLE]
        bridge.answer({next(iter(pending)): ANSWER})
        outcome = await bridge.next()
    assert isinstance(outcome, types.CallToolResult)
    assert got == [ANSWER]


async def test_wrong_kind_of_answer_is_an_error_for_the_server_not_an_exception() -> None:
    bridge = InputBridge("alice")
    got: list[object] = []

    async def upstream() -> None:
        got.append(await bridge.ask(types.ListRootsRequest(), types.ListRootsResult))

    async with anyio.create_task_group() as tg:
        tg.start_soon(upstream)
        pending = await bridge.next()
        assert isinstance(pending, dict)
        bridge.answer({next(iter(pending)): ANSWER})
    assert isinstance(got[0], types.ErrorData)
    assert "roots/list" in got[0].message


async def test_unknown_answer_keys_are_refused() -> None:
    bridge = InputBridge("alice")
    with pytest.raises(MCPError, match="no pending input request"):
        bridge.answer({"forged": ANSWER})


async def test_unanswered_request_times_out_as_an_error() -> None:
    bridge = InputBridge("alice", answer_timeout_s=0.05)
    result = await bridge.ask(SAMPLE, types.CreateMessageResult)
    assert isinstance(result, types.ErrorData) and "did not answer" in result.message
