"""The Docker Engine backend.

Control calls (create, start, inspect, list) go through ``docker-py`` on a worker thread: they
are rare and docker-py is the best-kept client. The hot path, a container's stdio, is driven
directly by asyncio, so a tool call never waits on a thread: two FIFOs the gateway holds itself
when the spec asks for them and the engine runs on this host (see ``fifo``), else the engine's
hijacked attach socket. stderr always comes through the attach socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import docker
from docker.errors import APIError

from bosun.images.base import EGRESS_IMAGE, EGRESS_PORT, ENTRY_WRAPPER, SECRETS_DIR
from bosun.runtime import fifo
from bosun.runtime.backend import (
    LABEL_EGRESS_NETWORK,
    LABEL_EGRESS_PROXY,
    LABEL_MANAGED,
    LABEL_ROLE,
    LABEL_SERVER,
    ContainerInfo,
    ContainerSpec,
    EgressSink,
    Limits,
    SecretFile,
    StderrSink,
    StdioChannel,
)
from bosun.streams import pipe_streams

egress_log = logging.getLogger("bosun.egress")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")

T = TypeVar("T")

# Docker multiplexes a non-TTY container's stdout and stderr on one stream in frames:
# one byte stream id, three zero bytes, a big-endian u32 length, then the payload.
_FRAME_HEADER = struct.Struct(">BxxxL")
_STDOUT, _STDERR = 1, 2
_READ_CHUNK = 64 * 1024


def proxy_env(proxy_ip: str) -> dict[str, str]:
    """The variables that send a container's HTTP(S) through the egress proxy (and nothing around it)."""
    url = f"http://{proxy_ip}:{EGRESS_PORT}"
    return {**{k: url for k in _PROXY_VARS}, "NO_PROXY": "", "no_proxy": ""}


def hardened_host_config(
    api: docker.APIClient, spec: ContainerSpec, network: str = "none", dns: list[str] | None = None,
    fifos: fifo.ServerFifos | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The host config every server container gets; see the README for why each setting is there."""
    tmpfs = {"/tmp": "rw,nosuid,nodev,noexec,size=64m"}
    # The image ships the secrets mount point as 0700 for the server user; Docker copies that
    # mode onto the tmpfs, so only that user can list or read what is delivered there.
    if spec.secrets:
        uid, _, gid = spec.user.partition(":")
        tmpfs[SECRETS_DIR] = f"rw,nosuid,nodev,noexec,size=1m,mode=0700,uid={uid},gid={gid or uid}"
    return dict(
        api.create_host_config(
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            read_only=True,
            tmpfs=tmpfs,
            network_mode=network,
            dns=dns,
            mem_limit=f"{spec.limits.memory_mb}m",
            memswap_limit=f"{spec.limits.memory_mb}m",
            nano_cpus=int(spec.limits.cpus * 1e9),
            pids_limit=spec.limits.pids,
            ipc_mode="private",
            binds=[f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in spec.mounts]
            + ([f"{fifos.directory}:{fifo.MOUNT}:ro"] if fifos else []),
            init=True,
            # stdout is the MCP stream: tool results, private data, redacted secrets' originals.
            # The engine must not keep a copy on disk; stderr reaches the gateway's log instead.
            log_config={"type": "none"},
        )
    )


class DockerStdio:
    """A container's attach socket as an ``StdioChannel``; stderr frames go to a sink."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, on_stderr: StderrSink):
        self._reader = reader
        self._writer = writer
        self._on_stderr = on_stderr

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def receive(self) -> bytes:
        while True:
            try:
                header = await self._reader.readexactly(_FRAME_HEADER.size)
                stream, size = _FRAME_HEADER.unpack(header)
                payload = await self._reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError):
                raise anyio.EndOfStream from None
            if stream == _STDOUT:
                return payload
            if stream == _STDERR:
                maybe = self._on_stderr(payload)
                if maybe is not None:
                    await maybe

    async def aclose(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self._writer.close()
            await self._writer.wait_closed()


class FifoStdio:
    """A container's stdio FIFOs as an ``StdioChannel``; its stderr comes on an attach socket, pumped
    to the sink by a task of its own."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reading: asyncio.ReadTransport,
        stderr: asyncio.Task[None],
    ) -> None:  # fmt: skip
        self._reader, self._writer, self._reading, self._stderr = reader, writer, reading, stderr
        self._out: list[bytes] = []

    async def send(self, data: bytes) -> None:
        # What is sent in one turn of the event loop leaves in one write, early in the next: under load,
        # the requests of many calls then cost one system call and wake the server once.
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(data)
        await self._writer.drain()

    def _flush(self) -> None:
        if self._out:
            self._writer.write(b"".join(self._out))
            self._out.clear()

    async def receive(self) -> bytes:
        data = await self._reader.read(_READ_CHUNK)
        if not data:
            raise anyio.EndOfStream
        return data

    async def aclose(self) -> None:
        self._flush()
        self._reading.close()
        self._writer.close()
        self._stderr.cancel()


async def _pump_stderr(channel: DockerStdio) -> None:
    """Drive an attach stream that carries only stderr: ``receive`` hands each frame to the sink and
    would return only a stdout frame, which this stream never has."""
    try:
        while True:
            await channel.receive()
    except anyio.EndOfStream:
        pass
    finally:
        await channel.aclose()


def secrets_preamble(secrets: list[SecretFile]) -> bytes:
    """What ``bosun-entry`` reads from stdin before the MCP stream: a header, then one line a secret."""
    lines = [f"BOSUN-SECRETS 1 {len(secrets)}"]
    lines += [f"{s.name} {s.env or '-'} {base64.b64encode(s.value.encode()).decode()}" for s in secrets]
    return ("\n".join(lines) + "\n").encode()


def _info(c: dict[str, Any]) -> ContainerInfo:
    labels = c.get("Labels") or c.get("Config", {}).get("Labels") or {}
    name = c.get("Name") or (c.get("Names") or ["?"])[0]
    state = c.get("State")
    return ContainerInfo(
        id=c["Id"],
        name=name.lstrip("/"),
        server=labels.get(LABEL_SERVER, "?"),
        image=c.get("ImageID") or c.get("Image", ""),
        status=state.get("Status", "?") if isinstance(state, dict) else str(c.get("Status", state)),
        labels=labels,
        started_at=state.get("StartedAt", "") if isinstance(state, dict) else str(c.get("Created", "")),
    )


async def _read_decisions(channel: StdioChannel, server: str, sink: EgressSink | None) -> None:
    """The proxy's stdout: one JSON decision a line, handed to the sink (and so to the log and audit)."""
    buf = b""
    try:
        while True:
            buf += await channel.receive()
            *lines, buf = buf.split(b"\n")
            for line in lines:
                try:
                    decision = json.loads(line)
                except ValueError:
                    continue
                if isinstance(decision, dict) and decision.get("event") in ("egress", "sentinel"):
                    decision["server"] = server
                    if sink is not None:
                        sink(decision)
                    else:
                        egress_log.info("egress decision", extra={"server": server, "decision": decision})
    except anyio.EndOfStream:
        pass
    finally:
        await channel.aclose()


class DockerBackend:
    def __init__(self, client: docker.DockerClient | None = None) -> None:
        self._client = client or docker.from_env(timeout=60)
        self._api: docker.APIClient = self._client.api
        self._egress_tasks: dict[str, asyncio.Task[None]] = {}
        # Whether the engine runs on this host (a unix socket on Linux), so that a bind-mounted FIFO is the
        # same one on both sides; specs asking for FIFOs get the attach stream from an engine that does not.
        self.local = sys.platform == "linux" and str(self._api.base_url).startswith("http+docker://")

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    async def _launch(
        self, spec: ContainerSpec, host_config: dict[str, Any], env: dict[str, str], extra_labels: dict[str, str],
        on_stderr: StderrSink, fifos: fifo.ServerFifos | None = None,
    ) -> tuple[ContainerInfo, StdioChannel]:  # fmt: skip
        """Create, attach, start; returns the container's stdio, on ``fifos`` when given, else on the attach
        socket. Removes the container on failure."""
        labels = {LABEL_MANAGED: "true", LABEL_SERVER: spec.server, **spec.labels, **extra_labels}
        entrypoint = [ENTRY_WRAPPER, *spec.command] if spec.secrets else spec.command
        attached = fifos is None
        created = await self._run(
            self._api.create_container,
            image=spec.image,
            entrypoint=fifo.wired(entrypoint) if fifos else entrypoint,
            command=spec.args,
            name=spec.name,
            user=spec.user,
            environment=env,
            labels=labels,
            stdin_open=attached,
            tty=False,
            host_config=host_config,
        )
        cid = created["Id"]
        channel: StdioChannel | None = None
        try:
            # Attach before start so not one byte of the server's first output is lost.
            params = {"stdin": int(attached), "stdout": int(attached), "stderr": 1, "stream": 1}
            raw = await self._run(self._api.attach_socket, cid, params=params)
            sock: socket.socket = getattr(raw, "_sock", raw)
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            channel = attach = DockerStdio(reader, writer, on_stderr)
            await self._run(self._api.start, cid)
            if fifos is not None:
                channel = await self._connect(cid, fifos, attach)
            if spec.secrets:
                await channel.send(secrets_preamble(spec.secrets))
            inspected = await self._run(self._api.inspect_container, cid)
        except BaseException:
            with anyio.CancelScope(shield=True):
                if channel is not None:
                    await channel.aclose()
                await self._remove(cid)
            raise
        return _info(inspected), channel

    async def _connect(self, cid: str, fifos: fifo.ServerFifos, attach: DockerStdio) -> FifoStdio:
        async def stopped() -> str | None:
            state = (await self.inspect(cid)).get("State") or {}
            return None if state.get("Running") else f"exit code {state.get('ExitCode')}"

        try:
            stdout, stdin = await fifos.connect(stopped)
        except fifo.FifoError:
            # Whatever the shell said about the FIFOs (a refused open, say) goes to the log before the error.
            with anyio.move_on_after(1):
                await _pump_stderr(attach)
            raise
        try:
            reader, writer, reading = await pipe_streams(stdout, stdin, _READ_CHUNK, owned=True)
        except BaseException:
            os.close(stdout)
            os.close(stdin)
            raise
        return FifoStdio(reader, writer, reading, asyncio.create_task(_pump_stderr(attach)))

    def _fifos(self, spec: ContainerSpec) -> fifo.ServerFifos | None:
        """FIFOs for the spec's stdio when it asks for them and the engine shares this host's files."""
        return fifo.ServerFifos(spec.stdio_dir / spec.name) if spec.stdio_dir and self.local else None

    async def probe_fifos(self, image: str, stdio_dir: Path, user: str) -> str | None:
        """Why a server's stdio cannot be FIFOs with this engine, or None once a hardened container of
        ``image`` has echoed a line through them (``bosun doctor``)."""
        if not self.local:
            return "the engine is not on this host"
        name = f"bosun-probe-{os.urandom(4).hex()}"
        spec = ContainerSpec(name, image, "probe", ["cat"], [], Limits(64, 0.5, 16), user, stdio_dir=stdio_dir)
        try:
            with anyio.fail_after(30):
                info, channel = await self.start(spec, lambda _data: None)
        except Exception as e:
            return str(e)
        try:
            with anyio.fail_after(5):
                await channel.send(b"bosun\n")
                echoed = await channel.receive()
            return None if echoed == b"bosun\n" else f"the probe container echoed {echoed!r}, not what was sent"
        except (TimeoutError, anyio.EndOfStream):
            return "the probe container did not echo a line through its FIFOs within 5 s"
        finally:
            await channel.aclose()
            await self.stop(info.id, 0)

    async def start(
        self, spec: ContainerSpec, on_stderr: StderrSink, on_egress: EgressSink | None = None
    ) -> tuple[ContainerInfo, StdioChannel]:
        fifos = self._fifos(spec)
        try:
            if not spec.egress:
                host_config = hardened_host_config(self._api, spec, fifos=fifos)
                return await self._launch(spec, host_config, spec.env, {}, on_stderr, fifos)
            network, proxy_id, proxy_ip = await self.start_egress(spec, on_egress)
            try:
                env = {**spec.env, **proxy_env(proxy_ip)}
                # Its only network is the internal one, and its resolver points nowhere: the proxy,
                # named by address, is the one way out, and names can only be resolved by the proxy.
                host_config = hardened_host_config(self._api, spec, network=network, dns=["127.0.0.1"], fifos=fifos)
                labels = {LABEL_EGRESS_PROXY: proxy_id, LABEL_EGRESS_NETWORK: network}
                return await self._launch(spec, host_config, env, labels, on_stderr, fifos)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._remove(proxy_id)
                    await self._remove_network(network)
                raise
        finally:
            if fifos is not None:
                fifos.discard()

    async def start_egress(
        self,
        spec: ContainerSpec,
        on_egress: EgressSink | None,
        proxy_args: Sequence[str] = (),
        proxy_secrets: Sequence[SecretFile] = (),
    ) -> tuple[str, str, str]:
        """An internal network with no route out, and the proxy that bridges it to the outside for the
        hosts in ``spec.egress``: (network, proxy container id, proxy address on that network).

        ``proxy_args`` and ``proxy_secrets`` give the proxy credential routes (``bosun.egress.inject``): the
        keys reach the proxy's container only, the way a server's secrets reach that server only."""
        network = f"{spec.name}-net"
        labels = {LABEL_MANAGED: "true", LABEL_SERVER: spec.server, **spec.labels}
        await self._run(self._api.create_network, network, driver="bridge", internal=True, labels=labels)
        proxy = ContainerSpec(
            name=f"{spec.name}-egress",
            image=EGRESS_IMAGE,
            server=spec.server,
            command=["python3", "-m", "bosun.egress.proxy"],
            args=["--listen", f"0.0.0.0:{EGRESS_PORT}", *[a for h in spec.egress for a in ("--allow", h)], *proxy_args],
            limits=Limits(memory_mb=128, cpus=0.5, pids=64),
            user=spec.user,
            labels=spec.labels,
            secrets=list(proxy_secrets),
        )
        try:
            host_config = hardened_host_config(self._api, proxy, network="bridge")
            labels = {LABEL_ROLE: "egress-proxy"}
            info, channel = await self._launch(proxy, host_config, {}, labels, lambda _data: None)
            await self._run(self._api.connect_container_to_network, info.id, network)
            inspected = await self._run(self._api.inspect_container, info.id)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._remove_network(network)
            raise
        self._egress_tasks[info.id] = asyncio.create_task(_read_decisions(channel, spec.server, on_egress))
        return network, info.id, inspected["NetworkSettings"]["Networks"][network]["IPAddress"]

    async def _remove(self, container_id: str, timeout_s: float = 0) -> None:
        try:
            await self._run(self._api.stop, container_id, timeout=int(timeout_s))
            await self._run(self._api.remove_container, container_id, force=True)
        except APIError as e:
            # Gone already (404), or another caller's removal is under way (409): both mean done.
            if e.status_code not in (404, 409):
                raise
        if task := self._egress_tasks.pop(container_id, None):
            task.cancel()

    async def _remove_network(self, name: str) -> None:
        try:
            await self._run(self._api.remove_network, name)
        except APIError as e:
            if e.status_code != 404:
                raise

    async def stop_egress(self, network: str, proxy_id: str) -> None:
        await self._remove(proxy_id)
        await self._remove_network(network)

    async def stop(self, container_id: str, timeout_s: float = 5) -> None:
        try:
            labels = (await self.inspect(container_id))["Config"]["Labels"] or {}
        except APIError:
            labels = {}
        await self._remove(container_id, timeout_s)
        if (proxy := labels.get(LABEL_EGRESS_PROXY)) and (network := labels.get(LABEL_EGRESS_NETWORK)):
            await self.stop_egress(network, proxy)

    async def prune_networks(self) -> None:
        """Remove Bosun's networks that no container uses any more (left by a killed gateway)."""
        await self._run(self._api.prune_networks, filters={"label": [f"{LABEL_MANAGED}=true"]})

    async def list(self, labels: dict[str, str] | None = None) -> list[ContainerInfo]:
        selector = {LABEL_MANAGED: "true", **(labels or {})}
        found = await self._run(
            self._api.containers, all=True, filters={"label": [f"{k}={v}" for k, v in selector.items()]}
        )
        return [_info(c) for c in found]

    async def inspect(self, container_id: str) -> dict[str, Any]:
        return dict(await self._run(self._api.inspect_container, container_id))

    async def memory_bytes(self, container_id: str) -> int | None:
        try:
            # one_shot: the engine answers at once instead of sampling for a second.
            stats = await self._run(self._api.stats, container_id, stream=False, one_shot=True)
        except APIError:
            return None
        usage = (stats.get("memory_stats") or {}).get("usage")
        return int(usage) if isinstance(usage, int) else None
