"""A catalog entry for a folder of the user's own (``bosun server add NAME --from-dir DIR``).

What the folder is comes from what it holds: a Python project (``pyproject.toml``/``setup.py``),
a Node one (``package.json``), or a ``Dockerfile`` with its build context. The command comes from
the entry points a project declares, when there is exactly one; otherwise, and always for a
Dockerfile, the user names it. Nothing in the folder is run here: it is only read.
"""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from bosun.catalog.models import Entry

Kind = Literal["python", "node", "dockerfile"]


class ProjectError(ValueError):
    """The folder cannot become an entry as asked; the message says what to pass instead."""


def detect_kind(folder: Path) -> Kind:
    found: list[Kind] = []
    if (folder / "pyproject.toml").is_file() or (folder / "setup.py").is_file():
        found.append("python")
    if (folder / "package.json").is_file():
        found.append("node")
    if (folder / "Dockerfile").is_file():
        found.append("dockerfile")
    if len(found) != 1:
        held = " and ".join(found) or "no pyproject.toml, setup.py, package.json or Dockerfile"
        raise ProjectError(f"{folder} holds {held}; say which to build with --kind python|node|dockerfile")
    return found[0]


def _read(path: Path, load: Any) -> dict[str, Any]:
    try:
        data = load(path.read_text())
    except (OSError, ValueError) as e:
        raise ProjectError(f"cannot read {path}: {e}") from None
    return data if isinstance(data, dict) else {}


def detect_command(folder: Path, kind: Kind) -> list[str]:
    """The command the project's manifest makes obvious: its one console script (Python, installed on PATH)
    or its one ``bin`` or its ``main`` (Node, run from /app where the folder is installed)."""
    if kind == "dockerfile":
        raise ProjectError("say what starts the server in the image built from the Dockerfile: pass --command")
    if kind == "python":
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
    kind: Kind | None = None,
    command: str | None = None,
    title: str | None = None,
    description: str | None = None,
) -> Entry:
    """An entry that builds ``folder`` as ``name``; it runs with the same hardening as any other (no
    network, no secrets, no mounts until granted in the entry or with ``bosun server enable``)."""
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise ProjectError(f"{folder} is not a folder")
    kind = kind or detect_kind(folder)
    argv = shlex.split(command) if command else detect_command(folder, kind)
    source: dict[str, str] = {"type": "dockerfile", "path": str(folder)}
    if kind != "dockerfile":
        source = {"type": "path", "path": str(folder), "runtime": kind}
    try:
        return Entry.model_validate(
            {
                "name": name,
                "title": title or name,
                "description": description or f"In-house server built from {folder}.",
                "source": source,
                "command": argv,
            }
        )
    except ValidationError as e:
        first = e.errors()[0]
        raise ProjectError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
