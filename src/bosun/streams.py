"""asyncio streams over pipes: the event loop's own non-blocking transports, no worker thread."""

from __future__ import annotations

import asyncio
import os


async def pipe_streams(
    read_fd: int, write_fd: int, limit: int, *, owned: bool
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.ReadTransport]:
    """A reader on ``read_fd`` and a writer on ``write_fd`` (pipes, FIFOs or terminals), and the read
    side's transport, which closing the writer does not close. With ``owned``, closing the transports
    closes the descriptors too; otherwise they stay open for whoever lent them."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    read_protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    reading, _ = await loop.connect_read_pipe(lambda: read_protocol, os.fdopen(read_fd, "rb", 0, closefd=owned))
    try:
        # FlowControlMixin is what asyncio's own streams put under a StreamWriter: drain() waits on it.
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(write_fd, "wb", 0, closefd=owned)
        )
    except BaseException:
        reading.close()
        raise
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop), reading
