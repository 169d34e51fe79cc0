"""Client wiring: Bosun's entry added to and removed from each client's own file, nothing else touched."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from bosun.clients.wiring import CLIENTS, Client, WiringError, connect, connected, disconnect

LAUNCH = (["/venv/bin/python", "-m", "bosun", "gateway", "run", "--agent", "x"], {"BOSUN_HOME": "/h/.bosun"})
JSON_CLIENTS = [c for c in CLIENTS.values() if c.format == "json"]


@pytest.mark.parametrize("client", JSON_CLIENTS, ids=[c.name for c in JSON_CLIENTS])
def test_json_clients_keep_everything_else_and_get_one_backup(client: Client, tmp_path: Path) -> None:
    path = client.path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    original = {"theme": "dark", client.key: {"github": {"command": "gh-mcp"}}}
    path.write_text(json.dumps(original))
    path.chmod(0o644)

    written, backup = connect(client, tmp_path, LAUNCH)
    data = json.loads(written.read_text())
    assert data["theme"] == "dark" and data[client.key]["github"] == {"command": "gh-mcp"}
    ours = data[client.key]["bosun"]
    assert ours["command"] == "/venv/bin/python" and ours["args"][-2:] == ["--agent", "x"]
    assert ours["env"] == {"BOSUN_HOME": "/h/.bosun"} and connected(client, tmp_path)
    assert backup is not None and json.loads(backup.read_text()) == original
    assert path.stat().st_mode & 0o777 == 0o644  # the user's file keeps its mode

    again, second_backup = connect(client, tmp_path, LAUNCH)
    assert second_backup is None and json.loads(again.read_text()) == data  # idempotent; the first copy stays

    assert disconnect(client, tmp_path) and json.loads(path.read_text()) == original
    assert not disconnect(client, tmp_path) and not connected(client, tmp_path)


def test_a_missing_file_is_created_and_a_broken_one_left_alone(tmp_path: Path) -> None:
    cursor = CLIENTS["cursor"]
    path, backup = connect(cursor, tmp_path, LAUNCH)
    assert backup is None and list(json.loads(path.read_text())["mcpServers"]) == ["bosun"]
    path.write_text("{not json")
    with pytest.raises(WiringError, match="not valid JSON"):
        connect(cursor, tmp_path, LAUNCH)
    assert path.read_text() == "{not json"
    path.write_text('{"mcpServers": []}')
    with pytest.raises(WiringError, match="'mcpServers' is not an object"):
        connect(cursor, tmp_path, LAUNCH)


def test_codex_toml_gets_its_own_tables_and_the_rest_stays_as_written(tmp_path: Path) -> None:
    codex = CLIENTS["codex"]
    path = codex.path(tmp_path)
    path.parent.mkdir(parents=True)
    original = 'model = "o4"  # mine\n\n[mcp_servers.github]\ncommand = "gh-mcp"\n\n[profiles.fast]\nmodel = "x"\n'
    path.write_text(original)
    connect(codex, tmp_path, LAUNCH)
    connect(codex, tmp_path, LAUNCH)  # replaces its own tables, never duplicates them
    data = tomllib.loads(path.read_text())
    assert data["model"] == "o4" and data["mcp_servers"]["github"] == {"command": "gh-mcp"}
    assert data["profiles"]["fast"] == {"model": "x"}
    assert data["mcp_servers"]["bosun"] == {"command": LAUNCH[0][0], "args": LAUNCH[0][1:], "env": LAUNCH[1]}
    assert path.read_text().count("[mcp_servers.bosun]") == 1
    assert disconnect(codex, tmp_path)
    assert path.read_text().strip() == original.strip()
    path.write_text("model = \n")
    with pytest.raises(WiringError, match="not valid TOML"):
        connect(codex, tmp_path, LAUNCH)
