"""The official MCP registry's ``server.json``, turned into Bosun entries with an honest report.

Every field is either mapped to an entry field or named in the report as not carried over;
nothing is dropped silently. Only ``pypi`` and ``npm`` packages over stdio can become entries
today (images and remote servers are separate work).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bosun.catalog.models import Entry

# Fields this importer understands; anything else in a document is reported, never ignored.
_KNOWN_TOP = {"$schema", "name", "title", "description", "version", "packages", "remotes", "repository",
              "websiteUrl", "icons", "_meta", "status"}  # fmt: skip
_INFORMATIONAL = {"$schema", "repository", "websiteUrl", "icons", "status", "version"}
# npm's own runner finds the package's bin in the image, whatever it is called, without a network.
NPM_COMMAND = ["npm", "exec", "--prefix", "/app", "--offline", "--no", "--"]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Argument(_Lenient):
    type: str = "positional"
    name: str | None = None
    value: str | None = None
    default: str | None = None
    isRequired: bool = False  # the format's own spelling


class EnvVar(_Lenient):
    name: str
    description: str | None = None
    isRequired: bool = False
    isSecret: bool = False
    default: str | None = None


class Transport(_Lenient):
    type: str = "stdio"


class Package(_Lenient):
    registryType: str
    identifier: str
    version: str | None = None
    transport: Transport = Transport()
    runtimeHint: str | None = None
    runtimeArguments: list[Argument] = []
    packageArguments: list[Argument] = []
    environmentVariables: list[EnvVar] = []


class ServerJson(_Lenient):
    name: str
    description: str = ""
    title: str | None = None
    version: str | None = None
    packages: list[Package] = []
    remotes: list[dict[str, Any]] = []


@dataclass
class ImportResult:
    origin: str
    entry: Entry | None
    notes: list[str] = field(default_factory=list)  # what was mapped, and how
    unsupported: list[str] = field(default_factory=list)  # what was not carried over, and why


def entry_name(registry_name: str) -> str:
    """``io.github.acme/weather-server`` -> ``weather-server``, within Bosun's name rules."""
    last = registry_name.rsplit("/", 1)[-1].lower()
    name = re.sub(r"[^a-z0-9-]+", "-", last).strip("-")[:32].strip("-")
    return name or "imported"


def _secret_name(env: str) -> str:
    return env.lower().replace("_", "-")


def convert(data: dict[str, Any], origin: str) -> ImportResult:
    try:
        doc = ServerJson.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return ImportResult(origin, None, unsupported=[f"not a valid server.json: {problems}"])
    result = ImportResult(origin, None)
    for key in sorted(set(data) - _KNOWN_TOP):
        result.unsupported.append(f"{key}: unknown field, not carried over")
    for key in sorted(set(data) & _INFORMATIONAL):
        result.notes.append(f"{key}: informational, not needed to run the server")
    meta = data.get("_meta")
    for ext in sorted(meta) if isinstance(meta, dict) else []:
        result.unsupported.append(f"_meta.{ext}: extension not understood, not carried over")
    for remote in doc.remotes:
        where = f"remotes: {remote.get('type', '?')} {remote.get('url', '?')}"
        result.unsupported.append(f"{where}: remote servers are not supported yet")

    chosen: Package | None = None
    for i, pkg in enumerate(doc.packages):
        where = f"packages[{i}] ({pkg.registryType} {pkg.identifier})"
        if chosen is None and pkg.registryType in ("pypi", "npm") and pkg.transport.type == "stdio":
            chosen = pkg
            result.notes.append(f"{where}: used as the source")
        else:
            why = "another package was used" if chosen else f"{pkg.registryType}/{pkg.transport.type} is not supported"
            result.unsupported.append(f"{where}: {why}")
    if chosen is None:
        result.unsupported.append("no pypi or npm package over stdio: nothing Bosun can build")
        return result

    args: list[str] = []
    for a in chosen.packageArguments:
        value = a.value or a.default
        if value is None:
            label = a.name or "positional argument"
            if a.isRequired:
                result.unsupported.append(f"packageArguments {label}: required but has no value; add it to args")
            else:
                result.notes.append(f"packageArguments {label}: optional with no value, left out")
            continue
        args += [a.name, value] if a.type == "named" and a.name else [value]
    runner = chosen.runtimeHint or "a runtime"
    for a in chosen.runtimeArguments:
        result.unsupported.append(
            f"runtimeArguments {a.name or a.value}: Bosun runs the package directly, not via {runner}"
        )

    env: dict[str, str] = {}
    secrets = []
    for var in chosen.environmentVariables:
        if var.isSecret:
            secrets.append({"name": _secret_name(var.name), "env": var.name, "required": var.isRequired})
            result.notes.append(f"{var.name}: secret {_secret_name(var.name)!r} (set it with `bosun secret set`)")
        elif var.default is not None:
            env[var.name] = var.default
        elif var.isRequired:
            result.unsupported.append(f"{var.name}: required, no default; set a value in the entry's env")

    version = chosen.version or doc.version
    command = [chosen.identifier] if chosen.registryType == "pypi" else [*NPM_COMMAND, chosen.identifier]
    try:
        entry = Entry.model_validate(
            {
                "name": entry_name(doc.name),
                "title": doc.title or doc.name,
                "description": doc.description or doc.name,
                "source": {"type": chosen.registryType, "package": chosen.identifier, "version": version or "?"},
                "command": command,
                "args": args,
                "env": env,
                "secrets": secrets,
                "labels": [f"imported:{doc.name}"],
            }
        )
    except ValidationError as e:
        for err in e.errors():
            result.unsupported.append(f"{'.'.join(map(str, err['loc']))}: {err['msg']}")
        return result
    result.entry = entry
    result.notes.append("network: none (server.json does not say which hosts it needs; add allow_hosts)")
    return result
