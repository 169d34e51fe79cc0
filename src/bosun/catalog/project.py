"""A catalog entry for a project folder of the user's own (``bosun server add NAME --from-dir DIR``).

The runtime comes from the folder's manifest (``pyproject.toml``/``setup.py``: Python;
``package.json``: Node) and the command from the entry points it declares, when there is exactly
one; otherwise the user names it. Nothing in the folder is run here: it is only read.
"""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from bosun.catalog.models import Entry

Runtime = Literal["python", "node"]


class ProjectError(ValueError):
    """The folder cannot become an entry as asked; the message says what to pass instead."""


def detect_runtime(folder: Path) -> Runtime:
    python = (folder / "pyproject.toml").is_file() or (folder / "setup.py").is_file()
    node = (folder / "package.json").is_file()
    if python == node:
        found = "both a Python and a Node manifest" if python else "no pyproject.toml, setup.py or package.json"
        raise ProjectError(f"{folder} has {found}; say which with --runtime python|node")
    return "python" if python else "node"


def _read(path: Path, load: Any) -> dict[str, Any]:
    try:
        data = load(path.read_text())
    except (OSError, ValueError) as e:
        raise ProjectError(f"cannot read {path}: {e}") from None
    return data if isinstance(data, dict) else {}


def detect_command(folder: Path, runtime: Runtime) -> list[str]:
    """The command the project's manifest makes obvious: its one console script (Python, installed on PATH)
    or its one ``bin`` or its ``main`` (Node, run from /app where the folder is installed)."""
    if runtime == "python":
        pyproject = folder / "pyproject.toml"
        scripts = _read(pyproject, tomllib.loads).get("project", {}).get("scripts", {}) if pyproject.is_file() else {}
        if len(scripts) == 1:
            return [next(iter(scripts))]
        listed = f" (it declares {', '.join(sorted(scripts))})" if scripts else ""
        raise ProjectError(f"cannot tell which command starts the server{listed}; pass --command")
    package = _read(folder / "package.json", json.loads)
    bins = package.get("bin")
    if isinstance(bins, str):
        return ["node", f"/app/{bins.removeprefix('./')}"]
    if isinstance(bins, dict) and len(bins) == 1:
        return ["node", f"/app/{str(next(iter(bins.values()))).removeprefix('./')}"]
    if isinstance(package.get("main"), str) and not bins:
        return ["node", f"/app/{package['main'].removeprefix('./')}"]
    raise ProjectError("cannot tell which file starts the server from package.json; pass --command")


def entry_from_dir(
    name: str,
    folder: Path,
    *,
    runtime: Runtime | None = None,
    command: str | None = None,
    title: str | None = None,
    description: str | None = None,
) -> Entry:
    """An entry that builds ``folder`` as ``name``; it runs with the same hardening as any other (no
    network, no secrets, no mounts until granted in the entry or with ``bosun server enable``)."""
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise ProjectError(f"{folder} is not a folder")
    runtime = runtime or detect_runtime(folder)
    argv = shlex.split(command) if command else detect_command(folder, runtime)
    try:
        return Entry.model_validate(
            {
                "name": name,
                "title": title or name,
                "description": description or f"In-house server built from {folder}.",
                "source": {"type": "path", "path": str(folder), "runtime": runtime},
                "command": argv,
            }
        )
    except ValidationError as e:
        first = e.errors()[0]
        raise ProjectError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
