"""The real ``bosun gateway run`` process, driven by the official MCP SDK client over stdio and HTTP."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp.types as types
import pytest
from _util import bosun_cmd, env_for, run_bosun
from conftest import HttpGateway, start_http_gateway
from mcp import Client, StdioServerParameters

from bosun.client import http_client
from bosun.config import Settings
from bosun.home import Home
from bosun.runtime.backend import LABEL_GATEWAY
from bosun.runtime.docker import DockerBackend

pytestmark = pytest.mark.anyio


def _text(result: object) -> str:
    return " ".join(getattr(c, "text", "") for c in getattr(result, "content", []))


async def _exercise(client: Client) -> None:
    names = {t.name for t in (await client.list_tools()).tools}
    assert {"time__get_current_time", "memory__create_entities", "filesystem__read_text_file"} <= names
    assert all("__" in n for n in names)
    assert '"timezone": "UTC"' in _text(await client.call_tool("time__get_current_time", {"timezone": "UTC"}))
    await client.call_tool(
        "memory__create_entities", {"entities": [{"name": "n1", "entityType": "t", "observations": ["o"]}]}
    )
    assert "n1" in _text(await client.call_tool("memory__read_graph", {}))
    assert _text(await client.call_tool("filesystem__read_text_file", {"path": "/projects/note.txt"})) == (
        "mounted read-only\n"
    )


async def test_stdio_gateway_with_sdk_client(home: Home) -> None:
    params = StdioServerParameters(command=sys.executable, args=bosun_cmd("gateway", "run")[1:], env=env_for(home))
    async with Client(params) as client:
        await _exercise(client)
    await _assert_no_containers_soon()


_HELLO = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
_STDIN_SCRIPT = b"\n".join(
    json.dumps(m).encode()
    for m in [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": _HELLO},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "time__get_current_time",
                                                                       "arguments": {"timezone": "UTC"}}},
    ]
)  # fmt: skip


@pytest.mark.parametrize("stdin", ["pipe", "file"])
def test_stdio_gateway_reads_pipes_and_files_and_survives_garbage(home: Home, stdin: str, tmp_path: Path) -> None:
    """Pipes are read on the event loop, a regular file in a worker thread. Both answer every request, even
    one still running when stdin ends, and a line that is not JSON gets a parse error, not the end of the session."""
    script = b"{not json\n" + _STDIN_SCRIPT + b"\n"
    argv = bosun_cmd("gateway", "run")
    if stdin == "file":
        (tmp_path / "in.jsonl").write_bytes(script)
        with (tmp_path / "in.jsonl").open("rb") as f:
            out = subprocess.run(argv, stdin=f, capture_output=True, env=env_for(home), timeout=120).stdout
    else:
        out = subprocess.run(argv, input=script, capture_output=True, env=env_for(home), timeout=120).stdout
    replies = [json.loads(line) for line in out.splitlines()]
    assert replies[0]["error"]["code"] == types.PARSE_ERROR
    assert replies[1]["id"] == 1 and replies[1]["result"]["serverInfo"]["name"] == "bosun"
    assert replies[2]["id"] == 2 and '"timezone": "UTC"' in replies[2]["result"]["content"][0]["text"]


async def test_resources_prompts_and_list_changed_through_gateway(home: Home) -> None:
    s = Settings.load(home.config_file)
    s.servers["everything"] = s.servers["time"].model_copy()
    s.save(home.config_file)
    params = StdioServerParameters(command=sys.executable, args=bosun_cmd("gateway", "run")[1:], env=env_for(home))
    changed = anyio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    # Handshake era: its connection lasts, so the gateway can notify it of list changes.
    async with Client(params, message_handler=on_message, mode="legacy") as client:
        assert "everything__echo" in {t.name for t in (await client.list_tools()).tools}
        assert _text(await client.call_tool("everything__echo", {"message": "hi"})).endswith("hi")
        prompts = (await client.list_prompts()).prompts
        assert prompts and all(p.name.startswith("everything__") for p in prompts)
        simple = next(p for p in prompts if not p.arguments)
        got = await client.get_prompt(simple.name)
        assert got.messages
        done = await client.complete(
            types.PromptReference(type="ref/prompt", name="everything__completable-prompt"),
            {"name": "department", "value": "S"},
        )
        assert done.completion.values == ["Sales", "Support"]
        resources = (await client.list_resources()).resources
        assert resources
        read = await client.read_resource(str(resources[0].uri))
        assert read.contents
        # Disabling a server while clients are connected removes its tools from the next listing.
        run_bosun(home, "server", "disable", "everything")
        with anyio.fail_after(10):
            await changed.wait()
        with anyio.fail_after(10):
            while any(t.name.startswith("everything__") for t in (await client.list_tools()).tools):
                await anyio.sleep(0.3)


async def _assert_no_containers_soon() -> None:
    backend = DockerBackend()
    with anyio.fail_after(20):
        while [c for c in await backend.list() if c.labels.get(LABEL_GATEWAY)]:
            await anyio.sleep(0.25)


@pytest.fixture
async def http_session(http_gateway: HttpGateway) -> AsyncIterator[Client]:
    async with http_client(http_gateway.url, http_gateway.token) as client:
        yield client


async def test_http_gateway_with_sdk_client(http_gateway: HttpGateway, http_session: Client) -> None:
    await _exercise(http_session)
    # The gateway's own record of where it runs, which `bosun tools` uses to find it.
    assert json.loads(http_gateway.home.gateway_file.read_text())["pid"] == http_gateway.proc.pid


def _rpc(gw: HttpGateway, body: str | bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    h = {
        "Authorization": f"Bearer {gw.token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        **(headers or {}),
    }
    return httpx.post(gw.url, content=body, headers=h, timeout=10)


INIT = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
    }
)


async def test_http_refuses_missing_or_wrong_token(http_gateway: HttpGateway) -> None:
    r = _rpc(http_gateway, INIT, {"Authorization": ""})
    assert r.status_code == 401
    assert "Bearer" in r.headers["www-authenticate"]
    assert _rpc(http_gateway, INIT, {"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{http_gateway.base}/healthz").status_code == 200  # public by design
    assert _rpc(http_gateway, INIT).status_code == 200


async def test_http_refuses_foreign_origin(http_gateway: HttpGateway) -> None:
    assert _rpc(http_gateway, INIT, {"Origin": "http://evil.test"}).status_code == 403
    opened = _rpc(http_gateway, INIT, {"Origin": http_gateway.base})
    assert opened.status_code == 200
    # A tool call on the session is served by the fast lane, which keeps the security check's verdicts:
    # a header that failed the check fails it on every call, before and after calls that passed.
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-06-18"}
    assert _rpc(http_gateway, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), session).is_success
    call = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                       "params": {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}})  # fmt: skip
    for _ in range(2):
        assert _rpc(http_gateway, call, {**session, "Origin": http_gateway.base}).status_code == 200
        assert _rpc(http_gateway, call, {**session, "Origin": "http://evil.test"}).status_code == 403
        assert _rpc(http_gateway, call, {**session, "Host": "evil.test"}).status_code == 421
        assert _rpc(http_gateway, call, {**session, "Content-Type": "text/plain"}).status_code == 400


@pytest.mark.parametrize(
    "garbage",
    [
        b"{not json",
        b"\xff\xfe\x00",
        b'{"jsonrpc":"2.0","id":1}',
        b'{"jsonrpc":"1.0","id":1,"method":"initialize"}',
        b"[]",
        b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":"nope"}',
    ],
)
async def test_malformed_jsonrpc_is_refused_and_gateway_keeps_serving(
    http_gateway: HttpGateway, http_session: Client, garbage: bytes
) -> None:
    r = _rpc(http_gateway, garbage)
    assert 400 <= r.status_code < 500 or "error" in r.text
    assert http_gateway.proc.poll() is None
    assert '"timezone": "UTC"' in _text(await http_session.call_tool("time__get_current_time", {"timezone": "UTC"}))


async def test_unknown_tool_is_an_error_not_a_crash(http_session: Client) -> None:
    for name in ("nosuch__tool", "time__nosuch", "no-separator"):
        with pytest.raises(Exception, match=r"not enabled|unknown tool|not a gateway tool name"):
            await http_session.call_tool(name, {})
    assert '"timezone"' in _text(await http_session.call_tool("time__get_current_time", {"timezone": "UTC"}))


async def test_http_gateway_exit_leaves_no_containers(home: Home, http_gateway: HttpGateway) -> None:
    async with http_client(http_gateway.url, http_gateway.token) as client:
        await client.call_tool("time__get_current_time", {"timezone": "UTC"})
    assert await DockerBackend().list()
    http_gateway.proc.send_signal(signal.SIGTERM)
    assert http_gateway.proc.wait(timeout=30) == 0
    await _assert_no_containers_soon()


@contextlib.asynccontextmanager
async def _client(home: Home, transport: str, **options: Any) -> AsyncIterator[Client]:
    """An SDK client of a gateway process over ``transport``; over HTTP, handshake-era tool calls take the lane."""
    if transport == "stdio":
        params = StdioServerParameters(command=sys.executable, args=bosun_cmd("gateway", "run")[1:], env=env_for(home))
        async with Client(params, **options) as client:
            yield client
        return
    with start_http_gateway(home) as gw:
        async with http_client(gw.url, gw.token, **options) as client:
            yield client


@pytest.mark.parametrize("transport", ["stdio", "http"])
@pytest.mark.parametrize("mode", ["legacy", "auto"], ids=["handshake-era", "2026-era"])
async def test_server_requests_and_progress_reach_the_calling_client(home: Home, mode: str, transport: str) -> None:
    """Handshake-era clients get back-channel requests; 2026-era clients get InputRequiredResult rounds."""
    s = Settings.load(home.config_file)
    s.servers["everything"] = s.servers["time"].model_copy()
    s.save(home.config_file)
    asked: list[str] = []

    async def sampling(ctx: object, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append("sampling")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="answer from the client's LLM"), model="fake"
        )

    async def elicitation(ctx: object, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append("elicitation")
        return types.ElicitResult(action="accept", content={"name": "Ada", "check": True})

    progress: list[float] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    callbacks: dict[str, Any] = {"sampling_callback": sampling, "elicitation_callback": elicitation}
    async with _client(home, transport, mode=mode, **callbacks) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        # everything registers these only for a client that can answer them: the gateway advertises it.
        assert {"everything__trigger-sampling-request", "everything__trigger-elicitation-request"} <= names
        r = await client.call_tool("everything__trigger-sampling-request", {"prompt": "hi", "maxTokens": 5})
        assert "answer from the client's LLM" in _text(r)
        r = await client.call_tool("everything__trigger-elicitation-request", {})
        assert "Name: Ada" in _text(r)
        assert asked == ["sampling", "elicitation"]
        r = await client.call_tool(
            "everything__trigger-long-running-operation", {"duration": 1, "steps": 3}, progress_callback=on_progress
        )
        assert not r.is_error
        assert progress == [1, 2, 3]


async def test_a_cancelled_lane_call_is_answered_as_cancelled_and_the_session_serves_on(home: Home) -> None:
    """Raw HTTP, so the answer to the cancelled call itself is seen (an SDK client stops listening for it)."""
    s = Settings.load(home.config_file)
    s.servers["everything"] = s.servers["time"].model_copy()
    s.save(home.config_file)
    with start_http_gateway(home) as gw:
        opened = _rpc(gw, INIT)
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-06-18"}
        _rpc(gw, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), session)

        def call(request_id: int, name: str, arguments: dict[str, Any]) -> str:
            return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                               "params": {"name": name, "arguments": arguments}})  # fmt: skip

        assert "warm" in _rpc(gw, call(1, "everything__echo", {"message": "warm"}), session).text
        long = call(2, "everything__trigger-long-running-operation", {"duration": 30, "steps": 30})
        async with anyio.create_task_group() as tg:
            answers: list[httpx.Response] = []

            async def slow() -> None:
                answers.append(await anyio.to_thread.run_sync(_rpc, gw, long, session))

            tg.start_soon(slow)
            await anyio.sleep(1.5)
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2}}
            assert _rpc(gw, json.dumps(cancel), session).status_code == 202
            with anyio.fail_after(5):
                while not answers:
                    await anyio.sleep(0.05)
        assert "request cancelled" in answers[0].text
        with anyio.fail_after(5):
            after = await anyio.to_thread.run_sync(_rpc, gw, call(3, "everything__echo", {"message": "after"}), session)
        assert "Echo: after" in after.text


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_cancelled_call_does_not_hold_up_the_next_one(home: Home, transport: str) -> None:
    s = Settings.load(home.config_file)
    s.servers["everything"] = s.servers["time"].model_copy()
    s.save(home.config_file)
    async with _client(home, transport, mode="legacy") as client:
        assert _text(await client.call_tool("everything__echo", {"message": "warm"})).endswith("warm")
        with anyio.move_on_after(1) as scope:  # the client gives up; the SDK sends notifications/cancelled
            await client.call_tool("everything__trigger-long-running-operation", {"duration": 30, "steps": 30})
        assert scope.cancelled_caught
        with anyio.fail_after(5):
            assert _text(await client.call_tool("everything__echo", {"message": "after"})).endswith("after")


def _mutant(rng: random.Random, n: int) -> Any:
    """One hostile message on an established session: a ``tools/call`` (or an answer, or a cancellation) with
    its id, params, name, arguments or ``_meta`` of the wrong type, size or shape."""
    odd = [None, True, 1.5, -1, 2**70, "", "x" * 5000, [], [1, "a"], {}, {"a": {"b": [None]}}, "é\u202e\x00"]
    tool = rng.choice(["time__get_current_time", "time__nosuch", "nosuch__tool", "no-separator", "__", "time__"])
    params: Any = {"name": tool, "arguments": {"timezone": rng.choice(["UTC", "Mars/Base", 7, None, ["UTC"]])}}
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params}
    match rng.randrange(9):
        case 0:
            message["id"] = rng.choice(odd)
        case 1:
            message["params"] = rng.choice(odd)
        case 2:
            params["name"] = rng.choice(odd)
        case 3:
            params["arguments"] = rng.choice(odd)
        case 4:
            params["_meta"] = rng.choice([*odd, {"progressToken": rng.choice(odd)}])
        case 5:
            message = {"jsonrpc": "2.0", "id": rng.choice([*odd, f"bosun-lane-{n}"]),
                       rng.choice(["result", "error"]): rng.choice(odd)}  # fmt: skip
        case 6:
            message = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rng.choice(odd)}}
        case 7:
            del message[rng.choice(["jsonrpc", "id", "method", "params"])]
        case _:
            message[rng.choice(["jsonrpc", "method"])] = rng.choice(odd)
    return message


async def test_hostile_messages_on_a_lane_session_get_answers_and_the_session_serves_on(
    http_gateway: HttpGateway,
) -> None:
    """The lane answers tool calls before the SDK's own checks: none of 300 seeded hostile messages on an
    established session gets a 5xx or an internal error, and the session and the gateway serve on."""
    opened = _rpc(http_gateway, INIT)
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Mcp-Protocol-Version": "2025-06-18"}
    _rpc(http_gateway, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), session)
    rng = random.Random(5)
    for n in range(300):
        body = json.dumps(_mutant(rng, n))
        r = await anyio.to_thread.run_sync(_rpc, http_gateway, body, session)
        assert r.status_code < 500, (body[:300], r.status_code, r.text[:300])
        assert '"code":-32603' not in r.text.replace(" ", ""), (body[:300], r.text[:300])
    assert http_gateway.proc.poll() is None
    call = {"jsonrpc": "2.0", "id": "last", "method": "tools/call",
            "params": {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}}  # fmt: skip
    assert '\\"timezone\\": \\"UTC\\"' in _rpc(http_gateway, json.dumps(call), session).text


def test_hostile_messages_on_a_stdio_lane_get_answers_and_the_connection_serves_on(home: Home) -> None:
    """The same 300 hostile messages as over HTTP, on a stdio connection after its handshake: none gets an
    internal error, the last (good) call is answered, and the gateway ends cleanly with stdin."""
    rng = random.Random(5)
    hostile = b"".join(json.dumps(_mutant(rng, n)).encode() + b"\n" for n in range(300))
    last = {"jsonrpc": "2.0", "id": "last", "method": "tools/call",
            "params": {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}}  # fmt: skip
    script = _STDIN_SCRIPT + b"\n" + hostile + json.dumps(last).encode() + b"\n"
    run = subprocess.run(bosun_cmd("gateway", "run"), input=script, capture_output=True, env=env_for(home), timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    replies = [json.loads(line) for line in run.stdout.splitlines()]
    assert not [r for r in replies if r.get("error", {}).get("code") == types.INTERNAL_ERROR]
    answer = next(r for r in replies if r.get("id") == "last")
    assert '"timezone": "UTC"' in answer["result"]["content"][0]["text"]
