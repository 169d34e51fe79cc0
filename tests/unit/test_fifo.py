"""The host side of a server's stdio FIFOs, against a real shell wiring them the way a container does
(the engine only adds the bind mount, which the integration tests cover)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import pytest

from bosun.runtime import fifo
from bosun.streams import pipe_streams

pytestmark = pytest.mark.anyio


def _serve(directory: Path, command: list[str]) -> subprocess.Popen[bytes]:
    """``command`` wired to the FIFOs as ``fifo.wired`` does it, with the mount point moved to ``directory``."""
    script = fifo.wired(command)[2].replace(fifo.MOUNT, str(directory))
    return subprocess.Popen(["/bin/sh", "-c", script, "bosun-stdio", *command])


async def _running() -> str | None:
    return None


async def test_a_server_wired_to_the_fifos_answers_and_their_names_are_gone(tmp_path: Path) -> None:
    fifos = fifo.ServerFifos(tmp_path / "stdio" / "server-1")
    assert oct(fifos.directory.stat().st_mode & 0o777) == "0o711"
    assert oct(fifos.directory.parent.stat().st_mode & 0o777) == "0o700"  # other users cannot reach them
    server = _serve(fifos.directory, ["cat"])  # echoes each line back, like a server answering
    try:
        with anyio.fail_after(10):
            stdout, stdin = await fifos.connect(_running)
        assert not fifos.directory.exists()  # nothing stays on disk while it runs
        reader, writer, reading = await pipe_streams(stdout, stdin, 1 << 16, owned=True)
        for i in range(3):
            writer.write(b'{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % i)
            with anyio.fail_after(5):
                assert await reader.readline() == b'{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % i
        server.terminate()
        with anyio.fail_after(5):
            assert await reader.read() == b""  # the server's end gone: end of stream, not a hang
        reading.close()
        writer.close()
    finally:
        server.kill()
        server.wait()


async def test_a_container_that_stops_before_wiring_is_a_clear_error(tmp_path: Path) -> None:
    fifos = fifo.ServerFifos(tmp_path / "server-2")

    async def stopped() -> str | None:
        return "exit code 127"

    with pytest.raises(fifo.FifoError, match=r"stopped before it opened its stdio FIFOs \(exit code 127\)"):
        await fifos.connect(stopped)
    fifos.discard()
    assert not fifos.directory.exists()
