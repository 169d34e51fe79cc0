"""Pointing MCP clients at the gateway, in each client's own configuration file.

Every client starts the gateway itself over stdio (``bosun gateway run --agent CLIENT``), so no
credential is written into a client's file, and each client is an agent of its own to policy and
audit. The user's other entries are kept; the file as it was before Bosun first changed it is kept
next to it (``.bosun-backup``); ``disconnect`` removes Bosun's entry and nothing else.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bosun.files import write_atomic

ENTRY = "bosun"


class WiringError(RuntimeError):
    """The client's file cannot be changed safely; the message says why and what to do."""


Launch = tuple[list[str], dict[str, str]]  # the command and the environment that start the gateway


def _stdio(launch: Launch) -> dict[str, Any]:
    return {"command": launch[0][0], "args": launch[0][1:], "env": launch[1]}


def _typed_stdio(launch: Launch) -> dict[str, Any]:
    return {"type": "stdio", **_stdio(launch)}


@dataclass(frozen=True)
class Client:
    name: str
    title: str
    relative: str  # the configuration file, under the user's home
    key: str  # the table of servers inside it
    format: Literal["json", "toml"] = "json"
    entry: Callable[[Launch], dict[str, Any]] = _stdio

    def path(self, user_home: Path) -> Path:
        return user_home / self.relative


CLIENTS = {
    c.name: c
    for c in (
        Client("claude-code", "Claude Code", ".claude.json", "mcpServers", entry=_typed_stdio),
        Client("claude-desktop", "Claude Desktop", ".config/Claude/claude_desktop_config.json", "mcpServers"),
        Client("cursor", "Cursor", ".cursor/mcp.json", "mcpServers"),
        Client("vscode", "VS Code", ".config/Code/User/mcp.json", "servers", entry=_typed_stdio),
        Client("gemini-cli", "Gemini CLI", ".gemini/settings.json", "mcpServers"),
        Client("codex", "Codex", ".codex/config.toml", "mcp_servers", format="toml"),
    )
}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text() or "{}")
    except ValueError as e:
        raise WiringError(f"{path} is not valid JSON ({e}); fix it or move it aside, then run this again") from None
    if not isinstance(data, dict):
        raise WiringError(f"{path} holds a JSON {type(data).__name__}, not an object; fix it or move it aside")
    return data


def _backup(path: Path) -> Path | None:
    """The file as it was before Bosun first changed it; later changes keep that first copy."""
    backup = path.with_name(path.name + ".bosun-backup")
    if path.exists() and not backup.exists():
        shutil.copy2(path, backup)
        return backup
    return None


# The TOML table Bosun owns in Codex's file, and any of its sub-tables: from its header to the next other one.
_OURS = re.compile(rf"^\[mcp_servers\.{ENTRY}(\.[^\]]*)?\]\s*$")
_HEADER = re.compile(r"^\s*\[")


def _without_ours(text: str) -> str:
    kept, inside = [], False
    for line in text.splitlines():
        if _HEADER.match(line):
            inside = bool(_OURS.match(line.strip()))
        if not inside:
            kept.append(line)
    return "\n".join(kept).rstrip() + ("\n" if kept else "")


def _toml_table(launch: Launch) -> str:
    # json.dumps of plain strings and string lists is valid TOML; hand-written because the standard
    # library reads TOML but cannot write it, and the user's file must otherwise stay byte for byte.
    command, env = launch
    lines = [f"[mcp_servers.{ENTRY}]", f"command = {json.dumps(command[0])}", f"args = {json.dumps(command[1:])}"]
    lines += ["", f"[mcp_servers.{ENTRY}.env]"] + [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in env.items()]
    return "\n".join(lines) + "\n"


def _check_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise WiringError(f"{path} is not valid TOML ({e}); fix it or move it aside, then run this again") from None


def connect(client: Client, user_home: Path, launch: Launch) -> tuple[Path, Path | None]:
    """Write Bosun's entry into the client's file; returns the file and the backup made now, if any."""
    path = client.path(user_home)
    if client.format == "toml":
        before = path.read_text() if path.exists() else ""
        _check_toml(path, before)
        after = _without_ours(before)
        after = (after + "\n" if after.strip() else "") + _toml_table(launch)
        if ENTRY not in _check_toml(path, after).get(client.key, {}):
            raise WiringError(f"{path}: Bosun's table did not come out as expected; nothing was changed")
    else:
        data = _read_json(path)
        servers = data.setdefault(client.key, {})
        if not isinstance(servers, dict):
            raise WiringError(f"{path}: {client.key!r} is not an object; fix it or move the file aside")
        servers[ENTRY] = client.entry(launch)
        after = json.dumps(data, indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    backup = _backup(path)
    _replace(path, after)
    return path, backup


def _replace(path: Path, text: str) -> None:
    # Atomic, and with the mode the user's file had (a new one stays private, as write_atomic makes it).
    mode = path.stat().st_mode & 0o777 if path.exists() else None
    write_atomic(path, text)
    if mode is not None:
        path.chmod(mode)


def disconnect(client: Client, user_home: Path) -> bool:
    """Remove Bosun's entry (nothing else); False when there was none."""
    path = client.path(user_home)
    if not path.exists():
        return False
    if client.format == "toml":
        before = path.read_text()
        if ENTRY not in _check_toml(path, before).get(client.key, {}):
            return False
        _replace(path, _without_ours(before))
        return True
    data = _read_json(path)
    servers = data.get(client.key)
    if not isinstance(servers, dict) or ENTRY not in servers:
        return False
    del servers[ENTRY]
    _replace(path, json.dumps(data, indent=2) + "\n")
    return True


def connected(client: Client, user_home: Path) -> bool:
    path = client.path(user_home)
    try:
        if client.format == "toml":
            return path.exists() and ENTRY in _check_toml(path, path.read_text()).get(client.key, {})
        servers = _read_json(path).get(client.key)
    except WiringError:
        return False
    return isinstance(servers, dict) and ENTRY in servers
