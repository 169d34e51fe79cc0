"""What every importer shares: the report it writes, and how a foreign server becomes a Bosun entry."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from bosun.catalog.models import HOST_PATTERN, Entry

# npm's own runner finds the package's bin in the image, whatever it is called, without a network.
NPM_COMMAND = ["npm", "exec", "--prefix", "/app", "--offline", "--no", "--"]
_SPEC = re.compile(r"^(?P<type>pypi|npm):(?P<package>@?[^@=\s]+)(?:==|@)(?P<version>[^@=\s]+)$")


@dataclass
class ImportResult:
    """One foreign server and what became of it; ``entry`` is None when nothing runnable came out."""

    origin: str
    entry: Entry | None = None
    notes: list[str] = field(default_factory=list)  # what was mapped, and how
    unsupported: list[str] = field(default_factory=list)  # what was not carried over, and why


def entry_name(foreign: str) -> str:
    """``io.github.acme/Weather_Server`` -> ``weather-server``, within Bosun's name rules."""
    last = foreign.rsplit("/", 1)[-1].lower()
    name = re.sub(r"[^a-z0-9-]+", "-", last).strip("-")[:32].strip("-")
    return name or "imported"


def secret_name(env: str) -> str:
    """The store name a secret gets by default: ``GITHUB_TOKEN`` -> ``github-token``."""
    return re.sub(r"[^a-z0-9.-]+", "-", env.lower()).strip("-.") or "secret"


def parse_package(spec: str) -> dict[str, str]:
    """``pypi:NAME==VERSION`` or ``npm:NAME@VERSION`` as an entry's ``source`` mapping."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise ValueError(f"{spec!r} is not a package: write pypi:NAME==VERSION or npm:NAME@VERSION")
    return m.groupdict()


def command_for(source: dict[str, str]) -> list[str]:
    """How a package is started inside its image: a PyPI console script named like the package,
    or npm's runner, which finds the package's bin itself."""
    return [source["package"]] if source["type"] == "pypi" else [*NPM_COMMAND, source["package"]]


def finish(result: ImportResult, fields: dict[str, Any]) -> ImportResult:
    """Validate the mapped fields as an entry; what fails validation goes into the report."""
    try:
        result.entry = Entry.model_validate(fields)
    except ValidationError as e:
        for err in e.errors():
            result.unsupported.append(f"{'.'.join(map(str, err['loc']))}: {err['msg']}")
    return result


def host_rules(hosts: list[str], ports: list[int], result: ImportResult, where: str) -> list[str]:
    """Foreign host allowances as Bosun ``allow_hosts``; a leading dot means the domain and below."""
    out: list[str] = []
    for host in hosts:
        names = [host[1:], "*" + host] if host.startswith(".") else [host]
        out += [f"{n}:{p}" for n in names for p in ports] if ports else names
    bad = [h for h in out if not re.match(HOST_PATTERN, h)]
    for h in bad:
        result.unsupported.append(f"{where}: {h!r} is not a host name Bosun can allow")
    return [h for h in out if h not in bad]
