"""Docker's MCP catalogs: the registry's per-server ``server.yaml`` files and the gateway's
``version: 2`` catalog (a ``registry:`` map of servers), as Bosun entries with an honest report.

Docker ships each server as a prebuilt image; Bosun builds its own from the server's real package,
so an entry needs the package named (``--package NAME=pypi:PKG==VER``) unless one is given. The
image itself is never pulled or run.
"""

from __future__ import annotations

import re
from typing import Any

from bosun.catalog.formats.common import (
    ImportResult,
    command_for,
    entry_name,
    finish,
    host_rules,
    parse_package,
    secret_name,
)

_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*(\|[^}]*)?\}\}")
# Fields of a catalog server (both formats, after flattening) that carry nothing needed to run it.
_INFORMATIONAL = {"icon", "readme", "toolsUrl", "source", "upstream", "dateAdded", "ref", "metadata", "meta",
                  "tools", "prompts", "resources", "longLived", "prefix", "policy"}  # fmt: skip
_HANDLED = {"name", "type", "image", "title", "description", "secrets", "env", "command", "volumes", "user",
            "disableNetwork", "allowHosts", "config", "remote", "sseEndpoint", "oauth", "extraHosts"}  # fmt: skip


def is_catalog(data: Any) -> bool:
    """A Docker gateway catalog: a ``registry:`` map of servers."""
    return isinstance(data, dict) and isinstance(data.get("registry"), dict)


def is_server_yaml(data: Any) -> bool:
    """A Docker MCP registry ``server.yaml``: a named server with ``about``, ``run`` or an image."""
    return isinstance(data, dict) and "name" in data and ("about" in data or "run" in data or "image" in data)


def flatten_server_yaml(data: dict[str, Any]) -> dict[str, Any]:
    """``server.yaml`` nests what the catalog keeps flat (``about``, ``run``, ``config``); one shape
    lets one converter report both. Unknown keys inside the nested blocks stay visible."""
    flat = {k: v for k, v in data.items() if k not in ("about", "run", "config")}
    for block in ("about", "run"):
        value = data.get(block)
        if isinstance(value, dict):
            flat.update(value)
        elif value is not None:
            flat[block] = value
    config = data.get("config")
    if isinstance(config, dict):
        flat["secrets"] = config.get("secrets", [])
        flat["env"] = config.get("env", [])
        params = config.get("parameters")
        flat["config"] = [{"name": data.get("name"), **params}] if isinstance(params, dict) else []
        for key in sorted(set(config) - {"secrets", "env", "parameters", "description"}):
            flat[f"config.{key}"] = config[key]
    return flat


def _defaults(config: Any) -> dict[str, Any]:
    """``{{server.param}}`` -> the parameter's default, from the entry's config schemas."""
    out: dict[str, Any] = {}
    for block in config if isinstance(config, list) else []:
        if not isinstance(block, dict):
            continue
        for prop, schema in (block.get("properties") or {}).items():
            if isinstance(schema, dict) and "default" in schema:
                out[f"{block.get('name')}.{prop}"] = schema["default"]
    return out


def _render(value: str, defaults: dict[str, Any]) -> str | None:
    """Fill templates from defaults; None when one has no scalar default (or uses a filter)."""
    missing = False

    def sub(m: re.Match[str]) -> str:
        nonlocal missing
        default = defaults.get(m.group(1))
        if m.group(2) or default is None or isinstance(default, (list, dict)):
            missing = True
            return ""
        return str(default)

    rendered = _TEMPLATE.sub(sub, value)
    return None if missing else rendered


def convert(server: dict[str, Any], origin: str, package: str | None = None) -> ImportResult:
    """One Docker catalog server (already flattened) as an entry; ``package`` names its real package."""
    result = ImportResult(origin)
    name = str(server.get("name") or "")
    if not name:
        result.unsupported.append("name: missing; every server needs one")
        return result
    kind = server.get("type", "server")
    for key in sorted(set(server) - _HANDLED - _INFORMATIONAL):
        result.unsupported.append(f"{key}: unknown field, not carried over")
    for key in sorted(set(server) & _INFORMATIONAL):
        result.notes.append(f"{key}: informational, not needed to run the server")
    if kind == "remote" or server.get("remote") or server.get("sseEndpoint"):
        url = (server.get("remote") or {}).get("url") or server.get("sseEndpoint")
        result.unsupported.append(f"remote {url}: remote servers are not supported yet")
    if kind not in ("server", "remote"):
        result.unsupported.append(f"type {kind}: only 'server' entries run as long-lived MCP servers")
    if server.get("oauth"):
        result.unsupported.append("oauth: OAuth flows are not supported yet")
    if server.get("extraHosts"):
        result.unsupported.append("extraHosts: Bosun never rewrites a server's name resolution")
    if kind != "server":
        return result
    if server.get("image"):
        result.notes.append(f"image {server['image']}: not pulled; Bosun builds its own image from the package")
    source = None
    if package is None:
        result.unsupported.append(
            f"no package: Docker entries name an image, not a package; name it with "
            f"--package {entry_name(name)}=pypi:NAME==VERSION (or npm:NAME@VERSION)"
        )
    else:
        try:
            source = parse_package(package)
            result.notes.append(f"source: {source['type']} {source['package']}=={source['version']} (from --package)")
        except ValueError as e:
            result.unsupported.append(f"--package: {e}")

    defaults = _defaults(server.get("config"))
    for block in server.get("config") or []:
        props = sorted((block.get("properties") or {}) if isinstance(block, dict) else {})
        for prop in props:
            key = f"{block.get('name')}.{prop}"
            scalar = isinstance(defaults.get(key), (str, int, float, bool))
            state = "default used in templates" if scalar else "no single default; templates using it are dropped"
            result.notes.append(f"config {key}: user setting, {state}")

    args: list[str] = []
    for i, item in enumerate(server.get("command") or []):
        rendered = _render(str(item), defaults)
        if rendered is None:
            result.unsupported.append(f"command[{i}] {item!r}: needs user configuration; add it to args yourself")
        else:
            args.append(rendered)

    env: dict[str, str] = {}
    for var in server.get("env") or []:
        var_name, raw = str(var.get("name", "")), str(var.get("value", var.get("example", "")))
        rendered = _render(raw, defaults)
        if rendered is None:
            result.unsupported.append(f"env {var_name}: {raw!r} needs user configuration; set it in the entry's env")
        else:
            env[var_name] = rendered
            result.notes.append(f"env {var_name}={rendered!r}")

    secrets = []
    for s in server.get("secrets") or []:
        secret = secret_name(str(s.get("name", "")))
        secrets.append({"name": secret, "env": s.get("env", ""), "required": True})
        result.notes.append(f"secret {s.get('name')} -> {secret!r} in ${s.get('env')} (set it with `bosun secret set`)")

    mounts = []
    for vol in server.get("volumes") or []:
        parts = str(vol).split(":")
        if _TEMPLATE.search(str(vol)) or len(parts) < 2:
            result.unsupported.append(
                f"volumes {vol!r}: a folder chosen by the user; grant one with `bosun server enable --mount`"
            )
            continue
        writable = not (len(parts) > 2 and parts[2] == "ro")
        mounts.append({"target": parts[1], "description": f"was {parts[0]} in Docker's catalog", "writable": writable})
        result.notes.append(f"volumes {vol!r}: mount request at {parts[1]}; the host folder is granted at enable")

    hosts: list[str] = []
    if server.get("disableNetwork"):
        result.notes.append("disableNetwork: network none")
    elif server.get("allowHosts"):
        hosts = host_rules([str(h) for h in server["allowHosts"]], [], result, "allowHosts")
        result.notes.append(f"allowHosts: network.allow_hosts {', '.join(hosts)}")
    else:
        result.notes.append("network: none (Docker's default is open; Bosun needs allowHosts to allow any)")
    if server.get("user"):
        result.notes.append(f"user {server['user']}: Bosun runs every server as the non-root uid 10001")
    if source is None:
        return result
    return finish(
        result,
        {
            "name": entry_name(name),
            "title": server.get("title") or name,
            "description": server.get("description") or name,
            "source": source,
            "command": command_for(source),
            "args": args,
            "env": env,
            "secrets": secrets,
            "network": {"allow_hosts": hosts},
            "mounts": mounts,
            "labels": [f"imported:docker:{name}"],
        },
    )
