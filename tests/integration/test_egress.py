"""Egress on the real engine: an allowlisted server reaches its hosts through Bosun's proxy only.

The "internet" here is two small web servers of our own, in containers on the engine's default
bridge. Nothing is sent to any other address.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import docker
import pytest
from _util import PROBE, override_entry, py
from conftest import Sites

from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.runtime.backend import LABEL_GATEWAY, LABEL_MANAGED
from bosun.runtime.docker import DockerBackend

pytestmark = pytest.mark.anyio


@pytest.fixture
async def egress_gateway(home: Home, sites: Sites) -> AsyncIterator[tuple[Gateway, str]]:
    override_entry(home, "time", network={"allow_hosts": [sites.allowed]})
    async with Gateway(home, DockerBackend()) as gw:
        assert not (await gw.call_tool("t", "time__get_current_time", {"timezone": "UTC"})).is_error
        container = gw.upstreams()[("time", "shared")].container
        assert container is not None
        yield gw, container.id
    leftover = DockerBackend()
    assert await leftover.list({LABEL_GATEWAY: gw.id}) == []
    nets = docker.from_env().api.networks(filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_GATEWAY}={gw.id}"]})
    assert nets == []


async def test_only_the_allowlisted_host_is_reachable_and_only_through_the_proxy(
    egress_gateway: tuple[Gateway, str], sites: Sites, docker_client: docker.DockerClient,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="bosun.egress")
    gw, cid = egress_gateway
    a_host, a_port = sites.allowed.split(":")
    b_host, b_port = sites.forbidden.split(":")
    checks = {
        "allowed via proxy": f"get('http://{sites.allowed}/')",
        "forbidden via proxy": f"get('http://{sites.forbidden}/')",
        "allowed without proxy": f"get('http://{sites.allowed}/', proxy=False)",
        "forbidden without proxy": f"get('http://{sites.forbidden}/', proxy=False)",
        "raw tcp allowed": f"tcp('{a_host}', {a_port})",
        "raw tcp forbidden": f"tcp('{b_host}', {b_port})",
        "docker host": "tcp('172.17.0.1', 2375)",
        "dns": "dns('api.internal.test')",
    }
    code = PROBE + "".join(f"print({k!r}, '=>', {v})\n" for k, v in checks.items())
    out = dict(line.split(" => ", 1) for line in py(docker_client, cid, code)[1].splitlines() if " => " in line)
    out = {k.strip("'"): v for k, v in out.items()}
    assert "allowed-site" in out["allowed via proxy"]
    assert out["forbidden via proxy"] == "HTTP 403"
    for key in ("allowed without proxy", "forbidden without proxy"):
        assert out[key].startswith("FAILED"), (key, out[key])
    for key in ("raw tcp allowed", "raw tcp forbidden", "docker host"):
        assert out[key].startswith("FAILED"), (key, out[key])
    assert out["dns"] == "NO-DNS"
    # Each decision was recorded with the host and the verdict.
    with anyio.fail_after(5):
        while not any(getattr(r, "decision", {}).get("allowed") is False for r in caplog.records):
            await anyio.sleep(0.1)
    decisions = [r.decision for r in caplog.records if hasattr(r, "decision")]
    assert {(d["host"], d["allowed"]) for d in decisions} >= {(a_host, True), (b_host, False)}
    assert not (await gw.call_tool("t", "memory__read_graph", {})).is_error


async def test_fetch_server_works_against_the_allowed_site_and_fails_cleanly_elsewhere(
    home: Home, sites: Sites
) -> None:
    # Our test sites live at private addresses, which the fetch server refuses on its own unless
    # told otherwise; Bosun's proxy still admits only the one address the allowlist names.
    override_entry(home, "fetch", args=["--allow-private-ips"], network={"allow_hosts": [sites.allowed]})
    async with Gateway(home, DockerBackend()) as gw:
        ok = await gw.call_tool("t", "fetch__fetch", {"url": f"http://{sites.allowed}/"})
        assert not ok.is_error, ok
        assert "allowed-site" in ok.content[0].text  # type: ignore[union-attr]
        refused = await gw.call_tool("t", "fetch__fetch", {"url": f"http://{sites.forbidden}/"})
        assert refused.is_error
        assert "forbidden-site" not in refused.content[0].text  # type: ignore[union-attr]
