"""Remote upstreams: a streamable HTTP server of our own on loopback, reached with a bearer token from the
secret store, governed like any server, and reconnected after it restarts."""

from __future__ import annotations

import json
import re
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import mcp.types as types
import pytest
from _util import audit_log, bosun_cmd, env_for, run_bosun
from fixtures.processes import free_port, started
from fixtures.tls import issue as tls_issue
from mcp.shared.exceptions import MCPError

from bosun.config import Settings
from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.images.lock import Lock
from bosun.runtime.docker import DockerBackend
from bosun.secrets.store import SecretStore

pytestmark = pytest.mark.anyio

SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "remote" / "server.py"
TOKEN = "remote-token-7f3a9c"


@contextmanager
def remote(port: int, *mode: str) -> Iterator[None]:
    # Any answer means up: without the token the fixture says 401.
    argv = [sys.executable, str(SERVER), str(port), TOKEN, *mode]
    with started(argv, f"http://127.0.0.1:{port}/mcp", "the remote"):
        yield


@contextmanager
def silent(port: int) -> Iterator[threading.Event]:
    """An address that takes connections and never answers them; the event is set once one is taken."""
    taken, held = threading.Event(), []
    with socket.create_server(("127.0.0.1", port)) as listener:
        listener.settimeout(0.2)

        def take() -> None:
            while listener.fileno() != -1:
                try:
                    held.append(listener.accept()[0])
                    taken.set()
                except (TimeoutError, OSError):
                    continue

        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        try:
            yield taken
        finally:
            for conn in held:
                conn.close()
    thread.join(5)


def _add(home: Home, port: int) -> None:
    entry = {"name": "faraway", "title": "Far away", "description": "A remote server.", "labels": ["untrusted_content"],
             "source": {"type": "remote", "url": f"http://127.0.0.1:{port}/mcp", "allow_http": True,
                        "headers": {"Authorization": "Bearer ${secret:faraway-token}"}}}  # fmt: skip
    (home.root / "catalog").mkdir(exist_ok=True)
    (home.root / "catalog" / "faraway.yaml").write_text(json.dumps(entry))
    SecretStore(home.root).set("faraway-token", TOKEN)
    run_bosun(home, "server", "enable", "faraway")


def _text(result: types.CallToolResult) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def _names(gw: Gateway) -> set[str]:
    return {t.name for t in await gw.list_tools("c")}


async def test_a_remote_server_is_reached_governed_and_reconnected(home: Home) -> None:
    port = free_port()
    _add(home, port)
    changes: list[str] = []

    async def on_change() -> None:
        changes.append("list_changed")

    async with Gateway(home, DockerBackend()) as gw:
        gw.listeners.append(on_change)
        with remote(port):
            assert "faraway__whoami" in await _names(gw)
            # The secret reached the server, through its connection only.
            assert _text(await gw.call_tool("c", "faraway__whoami", {})) == "called with a token ending 3a9c"
        # It went away: its tools leave the lists, and clients are told.
        with anyio.fail_after(30):
            while "faraway__whoami" in await _names(gw):
                await anyio.sleep(0.5)
        assert changes
        told = len(changes)
        down = await gw.call_tool("c", "faraway__whoami", {})
        assert down.is_error and "faraway" in _text(down)
        # Its address takes the connection and never answers: the reconnect in the background hangs there,
        # and neither a listing nor a call waits behind it.
        with silent(port) as taken:
            with anyio.fail_after(30):
                while not taken.is_set():
                    await anyio.sleep(0.2)
            with anyio.fail_after(5):
                assert "faraway__whoami" not in await _names(gw)
                hung = await gw.call_tool("c", "faraway__whoami", {})
            assert hung.is_error and "reconnecting" in _text(hung)
        with remote(port):  # back, on the same address: reconnected in the background, told again
            with anyio.fail_after(60):
                while "faraway__whoami" not in await _names(gw):
                    await anyio.sleep(0.5)
            assert len(changes) > told
            assert _text(await gw.call_tool("c", "faraway__whoami", {})) == "called with a token ending 3a9c"
    calls = [(r.tool, r.outcome) for r in audit_log(home).records() if r.kind == "tools/call"]
    assert calls == [("whoami", "ok"), ("whoami", "refused"), ("whoami", "refused"), ("whoami", "ok")]


async def test_a_remote_call_unanswered_in_time_fails_and_the_remote_serves_on(home: Home) -> None:
    port = free_port()
    _add(home, port)
    settings = Settings.load(home.config_file)
    settings.servers["faraway"].call_timeout_s = 1
    settings.save(home.config_file)
    async with Gateway(home, DockerBackend()) as gw:
        with remote(port):
            with anyio.fail_after(15):
                late = await gw.call_tool("c", "faraway__wait", {"seconds": 30})
            assert late.is_error and "did not answer wait within 1 s" in _text(late)
            assert _text(await gw.call_tool("c", "faraway__wait", {"seconds": 0.1})) == "waited 0.1 s"
            assert _text(await gw.call_tool("c", "faraway__whoami", {})) == "called with a token ending 3a9c"


@pytest.mark.parametrize("mode", ["events", "json"])
async def test_a_remote_answer_may_be_large_but_not_without_bound(home: Home, mode: str) -> None:
    """One message from a remote, in an event or a JSON body, is held whole: up to 16 MiB, as a container's
    line; a larger one fails that call only."""
    port = free_port()
    _add(home, port)
    async with Gateway(home, DockerBackend()) as gw:
        with remote(port, *(["json"] if mode == "json" else [])):
            assert len(_text(await gw.call_tool("c", "faraway__big", {"mib": 3}))) == 3 * 2**20
            with anyio.fail_after(60), pytest.raises(MCPError, match=r"over 16 MiB|exceeded the 16777216 byte limit"):
                await gw.call_tool("c", "faraway__big", {"mib": 20})
            assert _text(await gw.call_tool("c", "faraway__whoami", {})) == "called with a token ending 3a9c"


async def test_a_remote_over_the_older_sse_transport(home: Home) -> None:
    port = free_port()
    argv = [sys.executable, str(SERVER), str(port), TOKEN, "sse"]
    entry = {"name": "oldstyle", "title": "t", "description": "d",
             "source": {"type": "remote", "url": f"http://127.0.0.1:{port}/sse", "transport": "sse",
                        "allow_http": True, "headers": {"Authorization": f"Bearer {TOKEN}"}}}  # fmt: skip
    (home.root / "catalog").mkdir(exist_ok=True)
    (home.root / "catalog" / "oldstyle.yaml").write_text(json.dumps(entry))
    run_bosun(home, "server", "enable", "oldstyle")
    with started(argv, f"http://127.0.0.1:{port}/sse", "the SSE remote"):
        async with Gateway(home, DockerBackend()) as gw:
            assert _text(await gw.call_tool("c", "oldstyle__whoami", {})) == "called with a token ending 3a9c"


def test_remote_entries_are_https_unless_loopback_is_allowed(home: Home) -> None:
    entry = {"name": "plain", "title": "t", "description": "d",
             "source": {"type": "remote", "url": "http://example.com/mcp"}}  # fmt: skip
    (home.root / "catalog").mkdir(exist_ok=True)
    (home.root / "catalog" / "plain.yaml").write_text(json.dumps(entry))
    refused = run_bosun(home, "catalog", "ls", check=False)
    assert refused.returncode != 0 and "source: Value error, url must be https" in refused.stderr


OAUTH_SERVER = SERVER.parent / "oauth_server.py"
BROWSER = SERVER.parent / "browser.py"
TLS_PORT = 8443


@contextmanager
def in_house_network() -> Iterator[str]:
    """A network of the tests' own with a fixed address for the server (its certificate names it)."""
    for _ in range(5):
        third = secrets.randbelow(200) + 20
        name = f"bosun-test-{secrets.token_hex(4)}"
        made = subprocess.run(["docker", "network", "create", "--subnet", f"10.213.{third}.0/24", name],
                              capture_output=True, text=True)  # fmt: skip
        if made.returncode == 0:
            break
    else:
        raise RuntimeError(f"could not create a test network: {made.stderr}")
    try:
        yield f"10.213.{third}.10"
    finally:
        subprocess.run(["docker", "network", "rm", name.strip()], capture_output=True)


def _network_of(address: str) -> str:
    out = subprocess.run(["docker", "network", "ls", "--filter", "name=bosun-test-", "--format", "{{.Name}}"],
                         capture_output=True, text=True).stdout.split()  # fmt: skip
    for name in out:
        template = "{{(index .IPAM.Config 0).Subnet}}"
        subnet = subprocess.run(["docker", "network", "inspect", name, "--format", template],
                                capture_output=True, text=True).stdout  # fmt: skip
        if subnet.strip().startswith(address.rsplit(".", 1)[0] + "."):
            return name
    raise RuntimeError(f"no test network for {address}")


@contextmanager
def oauth_container(image: str, address: str, tls: Path, state: Path, ttl_s: int) -> Iterator[str]:
    """The OAuth fixture (authorization server and MCP server) in a hardened container on the test network,
    serving https with the private CA's certificate; yields its container name."""
    name = f"bosun-test-oauth-{secrets.token_hex(4)}"
    argv = ["docker", "run", "-d", "--name", name, "--network", _network_of(address), "--ip", address,
            "--user", "10001:10001", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
            "-v", f"{SERVER.parent}:/fixture:ro", "-v", f"{tls}:/tls:ro", "-v", f"{state}:/state",
            "--entrypoint", "/opt/venv/bin/python3", image, "/fixture/oauth_server.py", str(TLS_PORT), str(ttl_s),
            "/state/authorization-server.json", "/tls/server.pem", "/tls/server.key", address]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True)
    try:
        _wait_for_tls(address, tls / "ca.pem", name)
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def _wait_for_tls(address: str, ca: Path, container: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"https://{address}:{TLS_PORT}/mcp", verify=ssl.create_default_context(cafile=ca), timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
    raise RuntimeError(f"the OAuth container did not answer: {logs.stdout[-2000:]}{logs.stderr[-2000:]}")


def _token_number(result: types.CallToolResult) -> int:
    text = _text(result)
    assert text.startswith("access token #"), text
    return int(text.removeprefix("access token #"))


async def test_a_remote_behind_oauth_is_authorized_refreshed_and_reconnected(home: Home, tmp_path: Path) -> None:
    """An in-house server in a container on a network of our own, with its own OAuth authorization server
    and a private CA: reached over https, authorized once, its token refreshed, restarted and reconnected."""
    ttl_s, image = 3, Lock.load(home.lock_file).images["time"].tag  # an image with Python and the SDK
    tls, state = tmp_path / "tls", tmp_path / "state"
    tls.mkdir()
    state.mkdir()
    state.chmod(0o777)  # the fixture's container user keeps its clients and tokens here across a restart
    with in_house_network() as address:
        ca = tls_issue(tls, address)[0]
        entry = {"name": "guarded", "title": "Guarded", "description": "An in-house server behind OAuth.",
                 "source": {"type": "remote", "url": f"https://{address}:{TLS_PORT}/mcp", "auth": "oauth",
                            "ca_file": str(ca)}}  # fmt: skip
        (home.root / "catalog").mkdir(exist_ok=True)
        (home.root / "catalog" / "guarded.yaml").write_text(json.dumps(entry))
        run_bosun(home, "server", "enable", "guarded")
        with oauth_container(image, address, tls, state, ttl_s) as container:
            async with Gateway(home, DockerBackend()) as gw:
                refused = await gw.call_tool("c", "guarded__whoami", {})
                assert refused.is_error and "bosun server auth guarded" in _text(refused)

            # A person authorizes (discovery, registration, PKCE); the "browser" follows the URL to the callback.
            env = {**env_for(home), "BROWSER": f"{sys.executable} {BROWSER} {ca} %s"}
            with anyio.fail_after(120):
                authorized = await anyio.run_process(bosun_cmd("server", "auth", "guarded"), env=env, check=False)
            out = authorized.stdout.decode() + authorized.stderr.decode()
            assert authorized.returncode == 0 and "authorized guarded" in out, out
            stored = {i.name for i in SecretStore(home.root).infos()}
            assert {"oauth-guarded-access", "oauth-guarded-refresh", "oauth-guarded-client"} <= stored

            async with Gateway(home, DockerBackend()) as gw:
                first = _token_number(await gw.call_tool("c", "guarded__whoami", {}))
                await anyio.sleep(ttl_s + 0.5)  # expired: the next request refreshes it first
                assert _token_number(await gw.call_tool("c", "guarded__whoami", {})) == first + 1
                await anyio.run_process(["docker", "stop", "-t", "1", container])
                with anyio.fail_after(30):  # restarted mid-session: gone from the lists first ...
                    while "guarded__whoami" in await _names(gw):
                        await anyio.sleep(0.5)
                await anyio.run_process(["docker", "start", container])
                with anyio.fail_after(60):  # ... then back, reconnected with the kept (or refreshed) token
                    while "guarded__whoami" not in await _names(gw):
                        await anyio.sleep(0.5)
                assert _token_number(await gw.call_tool("c", "guarded__whoami", {})) >= first + 1
    # No token ever appears in the audit.
    kept = [SecretStore(home.root).get(n) for n in ("oauth-guarded-access", "oauth-guarded-refresh")]
    audit_text = json.dumps([r.detail for r in audit_log(home).records()])
    assert not any(token in audit_text for token in kept)


def test_enterprise_managed_authorization_is_checked_before_anything_is_asked(home: Home) -> None:
    """``bosun server auth --id-token``: every missing piece, missing secret and plain-http identity provider
    is named before any server is asked (the whole flow runs in the client-mode conformance run)."""
    entry = {"name": "acme", "title": "Acme", "description": "A remote behind the company's identity provider.",
             "source": {"type": "remote", "url": "https://mcp.acme.example/mcp", "auth": "oauth"}}  # fmt: skip
    (home.root / "catalog").mkdir(exist_ok=True)
    (home.root / "catalog" / "acme.yaml").write_text(json.dumps(entry))
    SecretStore(home.root).set("acme-client-secret", "s3cret")
    whole = ["--id-token", "acme-id-token", "--idp-token-url", "https://idp.example.com/token", "--idp-client-id",
             "bosun", "--client-id", "acme", "--client-secret", "acme-client-secret"]  # fmt: skip
    cases = [
        (whole[:2], "--id-token needs --idp-token-url, --idp-client-id, --client-id and --client-secret"),
        (whole[2:], "go with --id-token"),
        ([*whole, "--client-credentials"], "--id-token is a grant of its own"),
        (whole, "--id-token: .*acme-id-token"),
    ]
    for args, why in cases:
        run = run_bosun(home, "server", "auth", "acme", *args, check=False)
        assert run.returncode != 0 and re.search(why, run.stdout + run.stderr), (args, run.stdout + run.stderr)
    SecretStore(home.root).set("acme-id-token", "eyJ.id.token")
    plain = [*whole[:3], "http://idp.example.com/token", *whole[4:]]
    run = run_bosun(home, "server", "auth", "acme", *plain, check=False)
    assert run.returncode != 0 and "--idp-token-url: the identity provider's token endpoint must be an https" in (
        run.stdout + run.stderr
    )
