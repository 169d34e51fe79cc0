"""Attacks from inside a server container, run as the server runs (its user, limits, namespaces).

Each attack must fail or be contained, and the gateway must keep serving other servers while
it happens. Network attacks here target loopback only: server containers have no network.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import docker
import pytest
from _util import py, sh

from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.runtime.docker import DockerBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
async def victim(home: Home) -> AsyncIterator[tuple[Gateway, str]]:
    """A gateway with a running `time` server (Python inside) to attack from."""
    async with Gateway(home, DockerBackend()) as gw:
        assert not (await gw.call_tool("t", "time__get_current_time", {"timezone": "UTC"})).is_error
        container = gw.upstreams()[("time", "shared")].container
        assert container is not None
        yield gw, container.id


async def _gateway_still_serves(gw: Gateway) -> None:
    result = await gw.call_tool("t", "memory__read_graph", {})
    assert not result.is_error


async def test_cannot_read_host_files(
    victim: tuple[Gateway, str], docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    gw, cid = victim
    marker = tmp_path / "host-secret.txt"
    marker.write_text("host-only")
    out = sh(docker_client, cid, f"cat {marker} /proc/1/root{marker} 2>&1; ls /host 2>&1")
    assert "host-only" not in out
    out = sh(docker_client, cid, "mount -t proc proc /mnt 2>&1; cat /etc/shadow 2>&1 | head -1")
    assert "permission denied" in out.lower() or "must be superuser" in out.lower()
    await _gateway_still_serves(gw)


async def test_cannot_reach_the_docker_socket_or_escalate(
    victim: tuple[Gateway, str], docker_client: docker.DockerClient
) -> None:
    gw, cid = victim
    out = sh(
        docker_client,
        cid,
        'ls -l /var/run/docker.sock /run/docker.sock 2>&1; id -u; grep -E "^(CapEff|NoNewPrivs)" /proc/self/status',
    )
    assert "No such file" in out
    assert "\n10001\n" in f"\n{out}"
    assert "CapEff:\t0000000000000000" in out and "NoNewPrivs:\t1" in out
    # The root filesystem cannot be changed, so nothing can be planted for the next start.
    out = sh(docker_client, cid, "touch /opt/venv/bin/evil 2>&1; touch /evil 2>&1")
    assert out.count("Read-only file system") == 2
    await _gateway_still_serves(gw)


async def test_cannot_reach_gateway_or_host_ports(
    victim: tuple[Gateway, str], docker_client: docker.DockerClient
) -> None:
    gw, cid = victim
    # A real listener on the host's loopback, standing in for the gateway's port.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        probe = (
            "import socket\n"
            "for h in ('127.0.0.1', '172.17.0.1', 'host.docker.internal'):\n"
            "    try:\n"
            f"        socket.create_connection((h, {port}), timeout=2); print('REACHED', h)\n"
            "    except OSError as e:\n"
            "        print('blocked', h, type(e).__name__)\n"
        )
        _, out = py(docker_client, cid, probe)
    assert "REACHED" not in out
    assert out.count("blocked") == 3
    out = sh(docker_client, cid, "ls /sys/class/net")
    assert out.split() == ["lo"]  # loopback only: no interface leads out
    await _gateway_still_serves(gw)


async def test_dns_goes_nowhere(victim: tuple[Gateway, str], docker_client: docker.DockerClient) -> None:
    gw, cid = victim
    code = (
        "import socket\n"
        "try:\n"
        "    print(socket.getaddrinfo('api.internal.test', 443))\n"
        "except OSError as e:\n"
        "    print('no-dns', e)\n"
    )
    _, out = py(docker_client, cid, code)
    assert "no-dns" in out
    await _gateway_still_serves(gw)


async def test_fork_bomb_is_contained_by_the_pids_limit(
    victim: tuple[Gateway, str], docker_client: docker.DockerClient
) -> None:
    gw, cid = victim
    limit = docker_client.api.inspect_container(cid)["HostConfig"]["PidsLimit"]
    # Bounded: at most 400 children, each killed and reaped before the script ends.
    fork_bomb = (
        "import os, signal, time\n"
        "pids, refused = [], None\n"
        "for _ in range(400):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as e:\n"
        "        refused = type(e).__name__\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(20)\n"
        "        os._exit(0)\n"
        "    pids.append(pid)\n"
        "print('forked', len(pids), 'refused', refused, flush=True)\n"
        "for p in pids:\n"
        "    os.kill(p, signal.SIGKILL)\n"
        "    os.waitpid(p, 0)\n"
    )
    _, out = py(docker_client, cid, fork_bomb)
    forked = int(out.split()[1])
    assert forked < limit and "refused BlockingIOError" in out, out
    with anyio.fail_after(30):
        await _gateway_still_serves(gw)


async def test_memory_hog_is_contained(victim: tuple[Gateway, str], docker_client: docker.DockerClient) -> None:
    gw, cid = victim
    limit_mb = docker_client.api.inspect_container(cid)["HostConfig"]["Memory"] // 2**20
    code, out = py(docker_client, cid, f"b = bytearray({limit_mb * 4} * 2**20); print(len(b))")
    assert code != 0, out  # killed by the OOM killer or refused: never granted
    assert str(limit_mb * 4 * 2**20) not in out
    await _gateway_still_serves(gw)
