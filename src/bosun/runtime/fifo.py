"""A server container's stdin and stdout as two FIFOs that the gateway holds itself.

Through the engine's attach stream every byte of a call crosses two more processes each way
(gateway, dockerd, containerd-shim, server). A FIFO in a directory bind-mounted into the container
is one kernel object on both sides, so the server's stdio reaches the gateway with nothing in
between. ``bench/server_stdio.py`` measures both through this backend, with raw JSON-RPC on one
``everything`` container: here an echo round trip's p50 was 0.29-0.30 ms through the attach stream
and 0.14-0.15 ms through FIFOs, and 16 pipelined calls ran at 19-21 thousand calls/s against 41 thousand.

It needs the engine to share this host's filesystem (a local Linux engine) and ``/bin/sh`` in the
image, to wire the FIFOs before the server starts. The FIFOs' names are removed as soon as both
ends are open, so nothing is left on disk while the server runs or after a crash.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

MOUNT = "/run/bosun-stdio"
# Opened read-write, neither FIFO waits for the gateway's end. stdout is wired first: when the
# gateway can open stdin, the shell is past both redirections and the names can go.
_WIRING = f'exec "$@" 1<>{MOUNT}/out <>{MOUNT}/in'
CONNECT_TIMEOUT_S = 10.0
_POLL_S = 0.005


class FifoError(RuntimeError):
    pass


def wired(command: list[str]) -> list[str]:
    """The entrypoint that runs ``command`` with its stdin and stdout on the FIFOs at ``MOUNT``."""
    return ["/bin/sh", "-c", _WIRING, "bosun-stdio", *command]


class ServerFifos:
    """The host side of one container's FIFOs: made before the container is created (``directory`` is
    bind-mounted read-only at ``MOUNT``), connected once it runs."""

    def __init__(self, directory: Path) -> None:
        # The server runs as its own user, so its FIFOs are open to every user, and are reachable only
        # through the container's mount: on this host the folder above them is the gateway user's alone
        # (whatever the home's own mode), and they are there only until both ends are open.
        directory.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(directory.parent, 0o700)
        directory.mkdir()
        os.chmod(directory, 0o711)
        self.directory = directory
        try:
            for name in ("in", "out"):
                os.mkfifo(directory / name)
                os.chmod(directory / name, 0o666)
        except BaseException:
            self.discard()
            raise

    async def connect(self, stopped: Callable[[], Awaitable[str | None]]) -> tuple[int, int]:
        """The (stdout, stdin) descriptors once the server holds its ends; ``stopped`` says why the
        container is no longer running, or None while it is."""
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            try:
                # ENXIO until a reader exists: the server's shell, which opens stdin after stdout.
                stdin = os.open(self.directory / "in", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                break
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
            if (why := await stopped()) is not None:
                raise FifoError(
                    f"the container stopped before it opened its stdio FIFOs ({why}); if its stderr in the "
                    "gateway's log says it could not open them (an engine in a VM, SELinux), set `stdio: attach` "
                    "in the config"
                )
            if time.monotonic() > deadline:
                raise FifoError(
                    f"the container did not open its stdio FIFOs within {CONNECT_TIMEOUT_S:g}s; an engine that "
                    "does not share this host's files (one in a VM) cannot use them: set `stdio: attach` in "
                    "the config"
                )
            await anyio.sleep(_POLL_S)
        try:
            stdout = os.open(self.directory / "out", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except BaseException:
            os.close(stdin)
            raise
        finally:
            self.discard()
        return stdout, stdin

    def discard(self) -> None:
        """Remove the FIFOs' names (open ends stay open)."""
        shutil.rmtree(self.directory, ignore_errors=True)
