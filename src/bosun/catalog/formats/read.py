"""Reading any catalog file Bosun understands, telling the formats apart by their content."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bosun.catalog.formats import docker, registry
from bosun.catalog.formats.common import ImportResult, entry_name
from bosun.catalog.loader import CatalogError, parse_entry


def _is_native(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("source"), dict) and "command" in data


def _is_server_json(data: Any) -> bool:
    return isinstance(data, dict) and "name" in data and ("packages" in data or "remotes" in data)


def catalog_files(path: Path) -> list[Path]:
    """The files a path stands for: itself, or every JSON and YAML file below a folder."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".yaml", ".yml"))


def read_file(path: Path, packages: Mapping[str, str] = {}) -> list[ImportResult]:
    """Every server one file describes, each with its report. ``packages`` maps a server's name
    to its package (``pypi:NAME==VERSION``) for formats that only name an image."""
    origin = str(path)
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        return [ImportResult(origin, unsupported=[f"not readable: {e}"])]

    def package_of(name: str) -> str | None:
        return packages.get(name) or packages.get(entry_name(name))

    if docker.is_catalog(data):
        results = []
        unknown = sorted(set(data) - {"version", "name", "displayName", "registry"})
        if unknown:
            gaps = [f"{key}: unknown catalog field, not carried over" for key in unknown]
            results.append(ImportResult(origin, unsupported=gaps))
        for name, server in sorted(data["registry"].items()):
            where = f"{origin}#{name}"
            if not isinstance(server, dict):
                results.append(ImportResult(where, unsupported=["expected a mapping of server fields"]))
                continue
            results.append(docker.convert({**server, "name": name}, where, package_of(name)))
        return results
    if _is_server_json(data):
        return [registry.convert(data, origin)]
    if _is_native(data):
        try:
            return [ImportResult(origin, parse_entry(text, origin), notes=["a Bosun entry, used as written"])]
        except CatalogError as e:
            return [ImportResult(origin, unsupported=e.problems)]
    if docker.is_server_yaml(data):
        return [docker.convert(docker.flatten_server_yaml(data), origin, package_of(str(data["name"])))]
    return [
        ImportResult(
            origin,
            unsupported=["not a format Bosun reads (Bosun entry, server.json, Docker server.yaml or catalog)"],
        )
    ]


def read_path(path: Path, packages: Mapping[str, str] = {}) -> list[ImportResult]:
    """Every server under ``path`` (a file or a folder tree), in file order."""
    return [r for f in catalog_files(path) for r in read_file(f, packages)]
