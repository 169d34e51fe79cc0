"""Remote upstreams: a streamable HTTP server of our own on loopback, reached with a bearer token from the
secret store, governed like any server, and reconnected after it restarts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import mcp.types as types
import pytest
from _util import bosun_cmd, env_for, run_bosun
from fixtures.processes import free_port, started

from bosun.audit.log import AuditLog
from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.runtime.docker import DockerBackend
from bosun.secrets.store import SecretStore

pytestmark = pytest.mark.anyio

SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "remote" / "server.py"
TOKEN = "remote-token-7f3a9c"


@contextmanager
def remote(port: int) -> Iterator[None]:
    # Any answer means up: without the token the fixture says 401.
    with started([sys.executable, str(SERVER), str(port), TOKEN], f"http://127.0.0.1:{port}/mcp", "the remote"):
        yield


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
        with remote(port):  # back, on the same address: reconnected in the background, told again
            with anyio.fail_after(60):
                while "faraway__whoami" not in await _names(gw):
                    await anyio.sleep(0.5)
            assert len(changes) > told
            assert _text(await gw.call_tool("c", "faraway__whoami", {})) == "called with a token ending 3a9c"
    calls = [(r.tool, r.outcome) for r in AuditLog(home.audit_db).records() if r.kind == "tools/call"]
    assert calls == [("whoami", "ok"), ("whoami", "refused"), ("whoami", "ok")]


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


@contextmanager
def oauth_remote(port: int, ttl_s: int, state: Path) -> Iterator[None]:
    argv = [sys.executable, str(OAUTH_SERVER), str(port), str(ttl_s), str(state)]
    with started(argv, f"http://127.0.0.1:{port}/mcp", "the OAuth remote"):
        yield


def _token_number(result: types.CallToolResult) -> int:
    text = _text(result)
    assert text.startswith("access token #"), text
    return int(text.removeprefix("access token #"))


async def test_a_remote_behind_oauth_is_authorized_refreshed_and_reconnected(home: Home, tmp_path: Path) -> None:
    port, ttl_s = free_port(), 3
    entry = {"name": "guarded", "title": "Guarded", "description": "A remote server behind OAuth.",
             "source": {"type": "remote", "url": f"http://127.0.0.1:{port}/mcp", "allow_http": True,
                        "auth": "oauth"}}  # fmt: skip
    (home.root / "catalog").mkdir(exist_ok=True)
    (home.root / "catalog" / "guarded.yaml").write_text(json.dumps(entry))
    run_bosun(home, "server", "enable", "guarded")
    state = tmp_path / "authorization-server.json"
    with oauth_remote(port, ttl_s, state):
        async with Gateway(home, DockerBackend()) as gw:
            refused = await gw.call_tool("c", "guarded__whoami", {})
            assert refused.is_error and "bosun server auth guarded" in _text(refused)
        # A person authorizes (discovery, registration, PKCE); the "browser" follows the URL to the callback.
        env = {**env_for(home), "BROWSER": f"{sys.executable} {BROWSER} %s"}
        with anyio.fail_after(120):
            authorized = await anyio.run_process(bosun_cmd("server", "auth", "guarded"), env=env, check=False)
        out = authorized.stdout.decode() + authorized.stderr.decode()
        assert authorized.returncode == 0 and "authorized guarded" in out, out
    stored = {i.name for i in SecretStore(home.root).infos()}
    assert {"oauth-guarded-access", "oauth-guarded-refresh", "oauth-guarded-client"} <= stored

    async with Gateway(home, DockerBackend()) as gw:
        with oauth_remote(port, ttl_s, state):
            first = _token_number(await gw.call_tool("c", "guarded__whoami", {}))
            await anyio.sleep(ttl_s + 0.5)  # expired: the next request refreshes it first
            assert _token_number(await gw.call_tool("c", "guarded__whoami", {})) == first + 1
        with anyio.fail_after(30):  # restarted mid-session: gone from the lists first ...
            while "guarded__whoami" in await _names(gw):
                await anyio.sleep(0.5)
        with oauth_remote(port, ttl_s, state):  # ... then back, reconnected with the kept tokens
            with anyio.fail_after(60):
                while "guarded__whoami" not in await _names(gw):
                    await anyio.sleep(0.5)
            assert _token_number(await gw.call_tool("c", "guarded__whoami", {})) >= first + 1
    # No token ever appears in the audit.
    secrets_ = [SecretStore(home.root).get(n) for n in ("oauth-guarded-access", "oauth-guarded-refresh")]
    audit_text = json.dumps([r.detail for r in AuditLog(home.audit_db).records()])
    assert not any(s in audit_text for s in secrets_)
