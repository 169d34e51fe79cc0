"""Secrets on the real engine: delivered only to the server that declares them, and nowhere else."""

from __future__ import annotations

import json
import logging

import docker
import pytest
from _util import audit_log, override_entry, sh

from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.runtime.docker import DockerBackend
from bosun.secrets.store import SecretStore

pytestmark = pytest.mark.anyio

VALUE = "sk-bosun-test-5f3c1e0b9a7d"


def _declare_secret(home: Home) -> None:
    """The built-in `everything` entry (its get-env tool prints its environment) plus a secret."""
    override_entry(home, "everything", secrets=[{"name": "demo-token", "env": "DEMO_TOKEN"}])


async def test_secret_reaches_only_its_server_and_results_are_redacted(
    home: Home, docker_client: docker.DockerClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _declare_secret(home)
    SecretStore(home.root).set("demo-token", VALUE)
    async with Gateway(home, DockerBackend()) as gw:
        env = await gw.call_tool("t", "everything__get-env", {})
        text = json.dumps(env.model_dump(mode="json"))
        # The server really had it (in its environment), and the client sees only the marker.
        assert "DEMO_TOKEN" in text and "[REDACTED:demo-token]" in text
        assert VALUE not in text
        await gw.call_tool("t", "time__get_current_time", {"timezone": "UTC"})
        everything = gw.upstreams()[("everything", "shared")].container
        time_server = gw.upstreams()[("time", "shared")].container
        assert everything and time_server

        inside = sh(
            docker_client,
            everything.id,
            "cat /run/secrets/demo-token; echo; stat -c '%a %u' /run/secrets/demo-token /run/secrets",
        )
        assert inside.splitlines() == [VALUE, "600 10001", "700 10001"]

        assert VALUE not in json.dumps(docker_client.api.inspect_container(everything.id))
        # The engine keeps no log of the MCP stream (which carried the value before redaction).
        assert docker_client.api.inspect_container(everything.id)["HostConfig"]["LogConfig"]["Type"] == "none"
        elsewhere = sh(docker_client, time_server.id, "env; ls -la /run/secrets 2>&1; cat /proc/*/environ 2>&1")
        assert VALUE not in elsewhere
        assert VALUE not in json.dumps(docker_client.api.inspect_container(time_server.id))
    assert VALUE not in caplog.text
    assert all(VALUE not in json.dumps(r.__dict__, default=str) for r in caplog.records)
    # The redaction is audited by the secret's name; the value reaches no audit file.
    calls = [r for r in audit_log(home).records() if r.kind == "tools/call" and r.server == "everything"]
    assert calls and calls[-1].detail["redacted"] == ["demo-token"]
    for f in home.root.glob("audit.db*"):
        assert VALUE.encode() not in f.read_bytes()


async def test_missing_required_secret_fails_the_start_with_the_command_to_run(home: Home) -> None:
    _declare_secret(home)
    async with Gateway(home, DockerBackend()) as gw:
        result = await gw.call_tool("t", "everything__echo", {"message": "x"})
        assert result.is_error
        assert "run `bosun secret set demo-token`" in result.content[0].text  # type: ignore[union-attr]
        assert not (await gw.call_tool("t", "time__get_current_time", {"timezone": "UTC"})).is_error
