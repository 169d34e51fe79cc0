"""The official MCP registry's ``server.json``, turned into Bosun entries with an honest report.

Every field is either mapped to an entry field or named in the report as not carried over;
nothing is dropped silently. Only ``pypi`` and ``npm`` packages over stdio can become entries
today (images and remote servers are separate work). ToolHive's publisher extension is read for
the package's network permissions.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bosun.catalog.formats.common import ImportResult, command_for, entry_name, finish, host_rules, secret_name

# Fields this importer understands; anything else in a document is reported, never ignored.
_KNOWN_TOP = {"$schema", "name", "title", "description", "version", "packages", "remotes", "repository",
              "websiteUrl", "icons", "_meta", "status"}  # fmt: skip
_INFORMATIONAL = {"$schema", "repository", "websiteUrl", "icons", "status", "version"}
PUBLISHER_META = "io.modelcontextprotocol.registry/publisher-provided"
TOOLHIVE = "io.github.stacklok"
_TOOLHIVE_INFO = {"tier", "status", "tags", "tools", "metadata", "overview", "docker_tags", "custom_metadata",
                  "tool_definitions", "repository_url"}  # fmt: skip


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


def _toolhive(ext: dict[str, Any], identifier: str, result: ImportResult) -> tuple[list[str], list[str]]:
    """ToolHive's per-package extension: its network permission becomes ``allow_hosts``.

    Returns (allow_hosts, extra args)."""
    where = f"_meta.{PUBLISHER_META}.{TOOLHIVE}"
    hosts: list[str] = []
    args: list[str] = []
    for key, value in sorted(ext.items()):
        if key != identifier:
            result.unsupported.append(f"{where}.{key}: describes another package than {identifier}; not used")
            continue
        if not isinstance(value, dict):
            result.unsupported.append(f"{where}.{key}: expected an object")
            continue
        for field_name, v in sorted(value.items()):
            at = f"{where}[{identifier}].{field_name}"
            if field_name in _TOOLHIVE_INFO:
                result.notes.append(f"{at}: informational, not needed to run the server")
            elif field_name == "args" and isinstance(v, list):
                args = [str(a) for a in v]
                result.notes.append(f"{at}: appended to args")
            elif field_name == "permissions" and isinstance(v, dict):
                hosts = _permissions(v, at, result)
            else:
                result.unsupported.append(f"{at}: not understood, not carried over")
    return hosts, args


def _permissions(perms: dict[str, Any], at: str, result: ImportResult) -> list[str]:
    hosts: list[str] = []
    for key, v in sorted(perms.items()):
        if key in ("read", "write"):
            result.unsupported.append(
                f"{at}.{key}: Bosun grants host folders only at `bosun server enable --mount`, never from a catalog"
            )
        elif key == "network" and isinstance(v, dict):
            outbound = v.get("outbound") or {}
            for other in sorted(set(v) - {"outbound"}):
                result.unsupported.append(f"{at}.network.{other}: not understood, not carried over")
            if outbound.get("insecure_allow_all"):
                result.unsupported.append(
                    f"{at}.network.outbound.insecure_allow_all: refused; Bosun allows named hosts only"
                )
            for other in sorted(set(outbound) - {"allow_host", "allow_port", "insecure_allow_all"}):
                result.unsupported.append(f"{at}.network.outbound.{other}: not understood, not carried over")
            ports = [int(p) for p in outbound.get("allow_port") or [] if str(p).isdigit()]
            hosts = host_rules(list(outbound.get("allow_host") or []), ports, result, f"{at}.network")
            if hosts:
                result.notes.append(f"{at}.network: network.allow_hosts {', '.join(hosts)}")
        else:
            result.unsupported.append(f"{at}.{key}: not understood, not carried over")
    return hosts


def convert(data: dict[str, Any], origin: str) -> ImportResult:
    """One ``server.json`` document as an entry plus the report of what was and was not carried over."""
    try:
        doc = ServerJson.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return ImportResult(origin, None, unsupported=[f"not a valid server.json: {problems}"])
    result = ImportResult(origin)
    for key in sorted(set(data) - _KNOWN_TOP):
        result.unsupported.append(f"{key}: unknown field, not carried over")
    for key in sorted(set(data) & _INFORMATIONAL):
        result.notes.append(f"{key}: informational, not needed to run the server")
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

    raw_meta = data.get("_meta")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    hosts: list[str] = []
    extra_args: list[str] = []
    for ext in sorted(meta):
        publishers = meta[ext] if ext == PUBLISHER_META and isinstance(meta[ext], dict) else None
        if publishers is None:
            result.unsupported.append(f"_meta.{ext}: extension not understood, not carried over")
            continue
        for publisher in sorted(publishers):
            if publisher == TOOLHIVE and chosen is not None and isinstance(publishers[publisher], dict):
                hosts, extra_args = _toolhive(publishers[publisher], chosen.identifier, result)
            else:
                result.unsupported.append(f"_meta.{ext}.{publisher}: extension not understood, not carried over")
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
            secrets.append({"name": secret_name(var.name), "env": var.name, "required": var.isRequired})
            result.notes.append(f"{var.name}: secret {secret_name(var.name)!r} (set it with `bosun secret set`)")
        elif var.default is not None:
            env[var.name] = var.default
            result.notes.append(f"{var.name}: env, set to its default {var.default!r}")
        elif var.isRequired:
            result.unsupported.append(f"{var.name}: required, no default; set a value in the entry's env")
        else:
            result.notes.append(f"{var.name}: optional with no default, left unset")

    source = {
        "type": chosen.registryType,
        "package": chosen.identifier,
        "version": chosen.version or doc.version or "?",
    }
    if not hosts:
        result.notes.append("network: none (nothing says which hosts it needs; add network.allow_hosts)")
    return finish(
        result,
        {
            "name": entry_name(doc.name),
            "title": doc.title or doc.name,
            "description": doc.description or doc.name,
            "source": source,
            "command": command_for(source),
            "args": args + extra_args,
            "env": env,
            "secrets": secrets,
            "network": {"allow_hosts": hosts},
            "labels": [f"imported:{doc.name}"],
        },
    )
