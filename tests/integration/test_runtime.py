"""Server containers on the real engine: hardening, reuse, restart, cleanup and orphan reaping."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import time
from pathlib import Path

import anyio
import docker
import pytest
from _util import audit_log, bosun_cmd, env_for, override_entry, sh
from mcp.shared.exceptions import MCPError

from bosun.config import Settings
from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.images.lock import Lock
from bosun.runtime import fifo
from bosun.runtime.backend import LABEL_GATEWAY, LABEL_MANAGED, LABEL_SERVER, LABEL_SESSION, ContainerSpec, Limits
from bosun.runtime.docker import DockerBackend

pytestmark = pytest.mark.anyio


async def _time_call(gw: Gateway) -> str:
    result = await gw.call_tool("t", "time__get_current_time", {"timezone": "UTC"})
    assert not result.is_error, result
    return str(result.content[0].text)  # type: ignore[union-attr]


async def test_every_server_container_is_hardened(gateway: Gateway, docker_client: docker.DockerClient) -> None:
    await _time_call(gateway)
    await gateway.call_tool("t", "filesystem__list_allowed_directories", {})
    for (server, _), up in gateway.upstreams().items():
        assert up.container is not None
        attrs = docker_client.api.inspect_container(up.container.id)
        host, config = attrs["HostConfig"], attrs["Config"]
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], server
        assert "no-new-privileges:true" in host["SecurityOpt"], server
        assert host["ReadonlyRootfs"] is True, server
        assert "/tmp" in host["Tmpfs"] and "noexec" in host["Tmpfs"]["/tmp"], server
        assert host["NetworkMode"] == "none", server
        assert host["PidsLimit"] > 0 and host["Memory"] > 0 and host["NanoCpus"] > 0, server
        assert host["Privileged"] is False, server
        assert host["LogConfig"]["Type"] == "none", server  # stdout is the MCP stream: keep no copy
        assert config["User"] == "10001:10001", server
        assert config["Labels"][LABEL_SERVER] == server
        assert config["Labels"][LABEL_MANAGED] == "true"
        assert config["Labels"][LABEL_GATEWAY] == gateway.id
        assert config["Labels"][LABEL_SESSION] == "shared"
        # What the process really runs as, from inside: not root, no effective capabilities.
        out = sh(docker_client, up.container.id, "id -u; grep CapEff /proc/self/status")
        assert out.splitlines()[0] == "10001"
        assert "0000000000000000" in out
        # Its stdio is two FIFOs the gateway holds, not the engine's stream; their mount is read-only.
        assert config["OpenStdin"] is False, server
        assert config["Entrypoint"][:3] == fifo.wired([])[:3], server
        mount = next(m for m in attrs["Mounts"] if m["Destination"] == fifo.MOUNT)
        assert mount["RW"] is False, server
    assert not any(gateway.home.stdio_dir.iterdir())  # the FIFOs' names go once both ends are open


async def test_the_engine_attach_stream_serves_when_configured(home: Home, docker_client: docker.DockerClient) -> None:
    settings = Settings.load(home.config_file)
    settings.stdio = "attach"
    settings.save(home.config_file)
    async with Gateway(home, DockerBackend()) as gw:
        assert "UTC" in await _time_call(gw)
        up = gw.upstreams()[("time", "shared")]
        assert up.container is not None
        config = docker_client.api.inspect_container(up.container.id)["Config"]
        assert config["OpenStdin"] is True and config["Entrypoint"][0] != "/bin/sh"


async def test_filesystem_mount_is_read_only(gateway: Gateway) -> None:
    result = await gateway.call_tool("t", "filesystem__read_text_file", {"path": "/projects/note.txt"})
    assert result.content[0].text == "mounted read-only\n"  # type: ignore[union-attr]
    write = await gateway.call_tool("t", "filesystem__write_file", {"path": "/projects/x.txt", "content": "no"})
    assert write.is_error


async def test_containers_are_reused_across_calls(gateway: Gateway) -> None:
    await _time_call(gateway)
    first = gateway.upstreams()[("time", "shared")].container
    for _ in range(5):
        await _time_call(gateway)
    assert gateway.upstreams()[("time", "shared")].container == first
    assert len(await DockerBackend().list({LABEL_SERVER: "time", LABEL_GATEWAY: gateway.id})) == 1


async def test_killed_container_is_restarted_on_next_call(gateway: Gateway, docker_client: docker.DockerClient) -> None:
    await _time_call(gateway)
    up = gateway.upstreams()[("time", "shared")]
    assert up.container is not None
    old = up.container.id
    docker_client.api.kill(old)
    with anyio.fail_after(20):
        while up.container is not None:  # the watcher notices the exit
            await anyio.sleep(0.1)
    assert "UTC" in await _time_call(gateway)
    assert up.container is not None and up.container.id != old
    assert up.restarts == 1


async def test_idle_server_is_stopped(home: Home) -> None:
    async with Gateway(home, DockerBackend(), idle_timeout_s=1) as gw:
        await _time_call(gw)
        with anyio.fail_after(15):
            while await DockerBackend().list({LABEL_GATEWAY: gw.id}):
                await anyio.sleep(0.2)
        assert "UTC" in await _time_call(gw)  # and comes back on demand


async def test_server_that_prints_garbage_on_stdout_still_works(home: Home) -> None:
    override_entry(home, "time", command=["sh", "-c", "echo this is not JSON-RPC; echo {broken; exec mcp-server-time"])
    async with Gateway(home, DockerBackend()) as gw:
        assert "UTC" in await _time_call(gw)


HOSTILE = Path(__file__).resolve().parents[1] / "fixtures" / "hostile" / "server.py"


def _hostile(home: Home, call_timeout_s: float | None = None) -> None:
    """The ``time`` entry's image running the hostile server, with a call timeout of its own if given."""
    override_entry(home, "time", command=["python3", "-c", HOSTILE.read_text()])
    if call_timeout_s is not None:
        settings = Settings.load(home.config_file)
        settings.servers["time"].call_timeout_s = call_timeout_s
        settings.save(home.config_file)


async def test_a_server_answering_with_malformed_messages_gets_clear_errors_and_keeps_its_connection(
    home: Home,
) -> None:
    """Malformed progress and log notifications, replies to nobody, and replies that are not a result: each
    is dropped or answered as a malformed reply, and the server's one connection serves on."""
    _hostile(home)
    progressed: list[float] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        progressed.append(done)

    async with Gateway(home, DockerBackend()) as gw:
        for case in ("progress-list", "progress-odd", "log-odd", "wrong-ids"):
            with anyio.fail_after(10):
                result = await gw.call_tool("t", "time__misbehave", {"case": case}, progress)
            assert [getattr(c, "text", "") for c in result.content] == [f"ok after {case}"], (case, result)
        for case in ("error-string", "error-shapeless", "no-result", "result-list"):
            with anyio.fail_after(10), pytest.raises(MCPError, match="time answered tools/call with a malformed"):
                await gw.call_tool("t", "time__misbehave", {"case": case})
        assert not progressed  # "many" is not a number: that progress was dropped, not passed on
        assert gw.upstreams()[("time", "shared")].restarts == 0


async def test_a_call_its_server_does_not_answer_is_cancelled_there_and_fails_in_time(home: Home) -> None:
    _hostile(home, call_timeout_s=1.5)
    async with Gateway(home, DockerBackend()) as gw:
        started = time.monotonic()
        with anyio.fail_after(15):
            hung = await gw.call_tool("t", "time__misbehave", {"case": "hang"})
        waited = time.monotonic() - started
        assert hung.is_error and "did not answer misbehave within 1.5 s" in str(hung.content[0].text)  # type: ignore[union-attr]
        assert 1.4 < waited < 10
        # The server was told, and the connection serves on.
        seen = await gw.call_tool("t", "time__misbehave", {"case": "cancelled"})
        assert len(json.loads(seen.content[0].text)) == 1  # type: ignore[union-attr]
        assert gw.upstreams()[("time", "shared")].restarts == 0
    refused = [r for r in audit_log(home).records() if r.tool == "misbehave" and r.outcome == "refused"]
    assert len(refused) == 1 and "did not answer" in refused[0].reason


async def test_calls_to_a_server_that_stopped_reading_fail_in_time(home: Home) -> None:
    """Its stdin fills up: the calls written after that wait to be written, and time out all the same."""
    _hostile(home, call_timeout_s=1.5)
    async with Gateway(home, DockerBackend()) as gw:
        assert not (await gw.call_tool("t", "time__misbehave", {"case": "deaf"})).is_error
        for size in (400_000, 10):  # the first fills the pipe and the gateway's buffer; the second waits to be written
            started = time.monotonic()
            with anyio.fail_after(15):
                late = await gw.call_tool("t", "time__misbehave", {"case": "x" * size})
            assert late.is_error and "did not answer misbehave within 1.5 s" in str(late.content[0].text)  # type: ignore[union-attr]
            assert time.monotonic() - started < 5


@pytest.mark.parametrize("case", ["long-line", "close-stdout"])
async def test_a_server_whose_output_breaks_off_is_restarted(home: Home, case: str) -> None:
    """Its container still runs, but nothing it says can be read any more: the call fails, and the next one
    gets a fresh container rather than the same dead end until the idle timeout."""
    _hostile(home)
    async with Gateway(home, DockerBackend()) as gw:
        with anyio.fail_after(30):
            broken = await gw.call_tool("t", "time__misbehave", {"case": case})
        why = {"long-line": "wrote a line over 16 MiB; it was cut off", "close-stdout": "closed its connection"}[case]
        assert broken.is_error and why in str(broken.content[0].text), broken  # type: ignore[union-attr]
        with anyio.fail_after(30):
            while (fine := await gw.call_tool("t", "time__misbehave", {"case": "fine"})).is_error:
                await anyio.sleep(0.5)
        assert str(fine.content[0].text) == "ok after fine"  # type: ignore[union-attr]
        assert gw.upstreams()[("time", "shared")].restarts == 1


async def test_server_stderr_reaches_the_gateway_log(home: Home, caplog: pytest.LogCaptureFixture) -> None:
    override_entry(home, "time", command=["sh", "-c", "echo time server says hello >&2; exec mcp-server-time"])
    caplog.set_level(logging.INFO, logger="bosun.server")
    async with Gateway(home, DockerBackend()) as gw:
        assert "UTC" in await _time_call(gw)  # stdout, through the FIFOs
        with anyio.fail_after(10):
            while not any(r.getMessage() == "time server says hello" for r in caplog.records):
                await anyio.sleep(0.05)
    said = next(r for r in caplog.records if r.getMessage() == "time server says hello")
    assert said.name == "bosun.server" and said.server == "time"  # type: ignore[attr-defined]


async def test_fifos_the_server_cannot_open_are_a_clear_error_and_its_words_are_logged(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = fifo.ServerFifos.__init__

    def unreadable(self: fifo.ServerFifos, directory: Path) -> None:
        made(self, directory)
        for name in ("in", "out"):  # as an engine that maps users, or SELinux, might leave them
            (directory / name).chmod(0o600)

    monkeypatch.setattr(fifo.ServerFifos, "__init__", unreadable)
    said: list[bytes] = []
    image = Lock.load(home.lock_file).images["time"].image_id
    limits = Limits(memory_mb=128, cpus=0.5, pids=32)
    spec = ContainerSpec("bosun-test-refused", image, "time", ["mcp-server-time"], [], limits, "10001:10001",
                         stdio_dir=home.stdio_dir)  # fmt: skip
    with anyio.fail_after(30), pytest.raises(fifo.FifoError, match=r"stopped before it opened its stdio FIFOs"):
        await DockerBackend().start(spec, said.append)
    assert b"Permission denied" in b"".join(said)  # the shell's own words, on their way to the log
    assert not (home.stdio_dir / "bosun-test-refused").exists()
    assert "bosun-test-refused" not in [c.name for c in await DockerBackend().list({LABEL_SERVER: "time"})]


async def test_server_that_dies_at_start_is_an_error_and_others_keep_serving(home: Home) -> None:
    override_entry(home, "time", command=["sh", "-c", "echo dying >&2; exit 3"])
    async with Gateway(home, DockerBackend()) as gw:
        with anyio.fail_after(60):
            result = await gw.call_tool("t", "time__get_current_time", {})
        assert result.is_error
        assert "failed to start" in result.content[0].text  # type: ignore[union-attr]
        memory = await gw.call_tool("t", "memory__read_graph", {})
        assert not memory.is_error


async def test_session_scoped_server_gets_one_container_per_client(home: Home) -> None:
    override_entry(home, "time", scope="session")
    backend = DockerBackend()
    async with Gateway(home, backend) as gw:
        for client in ("alice", "bob", "alice"):
            result = await gw.call_tool(client, "time__get_current_time", {"timezone": "UTC"})
            assert not result.is_error
        containers = await backend.list({LABEL_SERVER: "time", LABEL_GATEWAY: gw.id})
        assert sorted(c.labels[LABEL_SESSION] for c in containers) == ["alice", "bob"]
        # A shared server still has exactly one.
        await gw.call_tool("alice", "memory__read_graph", {})
        await gw.call_tool("bob", "memory__read_graph", {})
        assert len(await backend.list({LABEL_SERVER: "memory", LABEL_GATEWAY: gw.id})) == 1


async def test_orphans_of_a_killed_gateway_are_reaped(home: Home) -> None:
    proc = subprocess.Popen(
        bosun_cmd("gateway", "run", "--transport", "stdio"),
        env=env_for(home),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin and proc.stdout
    init = (
        '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
        '"capabilities":{},"clientInfo":{"name":"t","version":"1"}}}\n'
        '{"jsonrpc":"2.0","method":"notifications/initialized"}\n'
        '{"jsonrpc":"2.0","id":2,"method":"tools/list"}\n'
    )
    proc.stdin.write(init.encode())
    proc.stdin.flush()
    proc.stdout.readline()
    proc.stdout.readline()  # the tools/list answer: containers are running now
    backend = DockerBackend()
    mine = [c for c in await backend.list() if c.labels.get(LABEL_GATEWAY, "").split(":")[1:2] == [str(proc.pid)]]
    assert mine, "the gateway started no containers"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    async with Gateway(home, backend) as gw:
        ids = {c.id for c in await backend.list()}
        assert not ids & {c.id for c in mine}
        del gw
