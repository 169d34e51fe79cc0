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


def attack(client: docker.DockerClient, container_id: str, script: str, timeout_s: int = 60) -> tuple[int, str]:
    run = client.api.exec_create(container_id, ["sh", "-c", f"timeout {timeout_s} sh -c '{script}'; echo EXIT=$?"])
    out = client.api.exec_start(run).decode(errors="replace")
    code = int(out.rsplit("EXIT=", 1)[1].strip())
    return code, out


async def _gateway_still_serves(gw: Gateway) -> None:
    result = await gw.call_tool("t", "memory__read_graph", {})
    assert not result.is_error


async def test_cannot_read_host_files(
    victim: tuple[Gateway, str], docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    gw, cid = victim
    marker = tmp_path / "host-secret.txt"
    marker.write_text("host-only")
    code, out = attack(docker_client, cid, f"cat {marker} /proc/1/root{marker} 2>&1; ls /host 2>&1")
    assert "host-only" not in out
    _, out = attack(docker_client, cid, "mount -t proc proc /mnt 2>&1; cat /etc/shadow 2>&1 | head -1")
    assert "permission denied" in out.lower() or "must be superuser" in out.lower()
    await _gateway_still_serves(gw)


async def test_cannot_reach_the_docker_socket_or_escalate(
    victim: tuple[Gateway, str], docker_client: docker.DockerClient
) -> None:
    gw, cid = victim
    _, out = attack(
        docker_client,
        cid,
        'ls -l /var/run/docker.sock /run/docker.sock 2>&1; id -u; grep -E "^(CapEff|NoNewPrivs)" /proc/self/status',
    )
    assert "No such file" in out
    assert "\n10001\n" in f"\n{out}"
    assert "CapEff:\t0000000000000000" in out and "NoNewPrivs:\t1" in out
    # The root filesystem cannot be changed, so nothing can be planted for the next start.
    _, out = attack(docker_client, cid, "touch /opt/venv/bin/evil 2>&1; touch /evil 2>&1")
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
            'python3 -c "import socket,sys\n'
            f"for h in ('127.0.0.1', '172.17.0.1', 'host.docker.internal'):\n"
            "  try:\n"
            f"    socket.create_connection((h, {port}), timeout=2); print('REACHED', h)\n"
            "  except OSError as e: print('blocked', h, type(e).__name__)\""
        )
        _, out = attack(docker_client, cid, probe.replace("'", "\\'"))
    assert "REACHED" not in out
    assert out.count("blocked") == 3
    _, out = attack(docker_client, cid, "cat /sys/class/net/*/operstate 2>&1; ls /sys/class/net")
    assert out.split("EXIT=")[0].split() == ["unknown", "lo"]  # loopback only: no interface leads out
    await _gateway_still_serves(gw)


async def test_dns_goes_nowhere(victim: tuple[Gateway, str], docker_client: docker.DockerClient) -> None:
    gw, cid = victim
    _, out = attack(
        docker_client,
        cid,
        "python3 -c \"import socket\ntry:\n  print(socket.getaddrinfo(\\'pypi.org\\', 443))\n"
        "except OSError as e: print(\\'no-dns\\', e)\"",
    )
    assert "no-dns" in out
    await _gateway_still_serves(gw)


async def test_fork_bomb_is_contained_by_the_pids_limit(
    victim: tuple[Gateway, str], docker_client: docker.DockerClient
) -> None:
    gw, cid = victim
    limit = docker_client.api.inspect_container(cid)["HostConfig"]["PidsLimit"]
    # Bounded: at most 400 background sleeps, each gone after 20 s.
    _, out = attack(
        docker_client,
        cid,
        "n=0; for i in $(seq 1 400); do sleep 20 2>/dev/null & n=$((n+1)); done 2>/dev/null; "
        'ls /proc | grep -c "^[0-9]"',
    )
    counted = [int(x) for x in out.split() if x.isdigit()]
    assert counted and counted[0] <= limit
    with anyio.fail_after(30):
        await _gateway_still_serves(gw)
    attack(docker_client, cid, "pkill sleep || true")


async def test_memory_hog_is_contained(victim: tuple[Gateway, str], docker_client: docker.DockerClient) -> None:
    gw, cid = victim
    limit_mb = docker_client.api.inspect_container(cid)["HostConfig"]["Memory"] // 2**20
    code, out = attack(docker_client, cid, f'python3 -c "b = bytearray({limit_mb * 4} * 2**20); print(len(b))"')
    assert code != 0, out  # killed by the OOM killer or refused: never granted
    assert str(limit_mb * 4 * 2**20) not in out
    await _gateway_still_serves(gw)
