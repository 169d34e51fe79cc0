"""Catalog formats: every field mapped or reported (samples written here from the published formats)."""

from __future__ import annotations

import json
from pathlib import Path

from bosun.catalog.formats.common import NPM_COMMAND, ImportResult, entry_name, parse_package
from bosun.catalog.formats.read import read_path
from bosun.catalog.formats.registry import convert

SAMPLES = Path(__file__).parent.parent / "samples" / "registry"
DOCKER = Path(__file__).parent.parent / "samples" / "docker"


def load(name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((SAMPLES / name / "server.json").read_text())
    return data


def test_pypi_package_maps_to_an_entry_and_reports_the_rest() -> None:
    r = convert(load("time"), "time/server.json")
    assert r.entry is not None
    e = r.entry
    assert (e.name, e.title) == ("time-server", "Time (imported)")
    assert (e.source.type, e.source.package, e.source.version) == ("pypi", "mcp-server-time", "2026.10.19")
    assert e.command == ["mcp-server-time"] and e.args == ["--local-timezone", "UTC"]
    assert e.env == {"TZ_MODE": "strict"}
    assert [(s.name, s.env, s.required) for s in e.secrets] == [("time-api-token", "TIME_API_TOKEN", False)]
    # ToolHive's permission for this package: a leading dot means the domain and its subdomains.
    assert e.network.allow_hosts == ["example.com:443", "*.example.com:443"]
    gaps = "\n".join(r.unsupported)
    assert "runtimeArguments --python" in gaps
    assert "packages[1] (oci docker.io/example/time): another package was used" in gaps
    assert "_meta.com.example.analytics: extension not understood" in gaps
    assert "io.github.stacklok.docker.io/example/time: describes another package" in gaps
    assert "permissions.read: Bosun grants host folders only at `bosun server enable --mount`" in gaps
    notes = "\n".join(r.notes)
    assert "--verbose: optional with no value, left out" in notes
    assert "repository: informational" in notes
    assert "io.github.stacklok[mcp-server-time].tier: informational" in notes


def test_npm_package_runs_through_npm_exec_offline() -> None:
    r = convert(load("memory"), "memory/server.json")
    assert r.entry is not None
    assert r.entry.name == "knowledge-graph"
    assert r.entry.command == [*NPM_COMMAND, "@modelcontextprotocol/server-memory"]
    assert r.entry.env == {"MEMORY_FILE_PATH": "/tmp/graph.jsonl"}


def test_nothing_buildable_is_reported_not_guessed() -> None:
    r = convert(load("remote-only"), "remote-only/server.json")
    assert r.entry is None
    gaps = "\n".join(r.unsupported)
    assert "license: unknown field" in gaps
    assert "remote servers are not supported yet" in gaps
    assert "nuget/stdio is not supported" in gaps
    assert "nothing Bosun can build" in gaps


def test_invalid_documents_and_versions() -> None:
    assert convert({"description": "no name"}, "x").unsupported[0].startswith("not a valid server.json: name")
    doc = {"name": "a/b", "packages": [{"registryType": "pypi", "identifier": "x", "version": "^1.0"}]}
    r = convert(doc, "x")
    assert r.entry is None and any("exact version" in g for g in r.unsupported)


def test_entry_names_fit_bosun_rules() -> None:
    assert entry_name("io.github.acme/Weather_Server") == "weather-server"
    assert entry_name("x/" + "a" * 60) == "a" * 32
    assert entry_name("x/___") == "imported"


def test_toolhive_allow_all_is_refused_not_widened() -> None:
    doc = {
        "name": "a/open",
        "packages": [{"registryType": "pypi", "identifier": "open-mcp", "version": "1.0.0"}],
        "_meta": {
            "io.modelcontextprotocol.registry/publisher-provided": {
                "io.github.stacklok": {
                    "open-mcp": {"permissions": {"network": {"outbound": {"insecure_allow_all": True}}}}
                }
            }
        },
    }
    r = convert(doc, "x")
    assert r.entry is not None and r.entry.network.allow_hosts == []
    assert any("insecure_allow_all: refused" in g for g in r.unsupported)


def by_origin(packages: dict[str, str]) -> dict[str, ImportResult]:
    return {
        r.origin.rsplit("/", 2)[-2] if "#" not in r.origin else r.origin.split("#")[1]: r
        for r in read_path(DOCKER, packages)
    }


def test_docker_server_yaml_maps_with_a_named_package() -> None:
    results = by_origin(
        {"clock": "pypi:mcp-server-time==2026.10.19", "github-issues": "pypi:mcp-server-fetch==2026.10.24"}
    )
    clock = results["clock"]
    e = clock.entry
    assert e is not None
    assert (e.name, e.title, e.command) == ("clock", "Clock", ["mcp-server-time"])
    assert e.args == ["--local-timezone=UTC"]  # the template filled from the parameter's default
    assert e.env == {"CLOCK_MODE": "strict"} and e.network.allow_hosts == []
    notes = "\n".join(clock.notes)
    assert "user 1000:1000: Bosun runs every server as the non-root uid 10001" in notes
    assert "image mcp/clock: not pulled" in notes and "disableNetwork: network none" in notes

    gh = results["github-issues"]
    e = gh.entry
    assert e is not None
    assert [(s.name, s.env) for s in e.secrets] == [("github.personal-access-token", "GITHUB_TOKEN")]
    assert e.network.allow_hosts == ["api.github.internal.test:443", "uploads.internal.test", "*.uploads.internal.test"]
    assert [(m.target, m.writable) for m in e.mounts] == [("/cache", False)]
    gaps = "\n".join(gh.unsupported)
    assert "env GITHUB_ORG: '{{github-issues.org}}' needs user configuration" in gaps
    assert "config.registryHints: unknown field" in gaps


def test_docker_entries_without_a_package_say_how_to_give_one() -> None:
    results = by_origin({})
    files = results["files"]
    assert files.entry is None
    gaps = "\n".join(files.unsupported)
    assert "--package files=pypi:NAME==VERSION" in gaps
    # Everything else in the file is still reported, not hidden behind the first problem.
    assert "command[0] '{{files.paths|volume-target|into}}'" in gaps and "volumes '{{files.paths|volume|into}}'" in gaps
    hosted = "\n".join(results["hosted"].unsupported)
    assert "remote servers are not supported yet" in hosted and "oauth" in hosted


def test_docker_catalog_v2() -> None:
    results = by_origin({"knowledge": "npm:@modelcontextprotocol/server-memory@2026.8.31"})
    k = results["knowledge"]
    assert k.entry is not None
    assert k.entry.command == [*NPM_COMMAND, "@modelcontextprotocol/server-memory"]
    assert k.entry.env == {"MEMORY_FILE_PATH": "/tmp/graph.jsonl"}
    assert "tools: informational" in "\n".join(k.notes)
    assert "type poci" in "\n".join(results["runner"].unsupported)
    remote = "\n".join(results["remote-docs"].unsupported)
    assert "linger: unknown field" in remote and "remote servers are not supported yet" in remote
    assert "no package" in "\n".join(results["search"].unsupported)


def test_package_specs() -> None:
    assert parse_package("npm:@scope/pkg@1.2.3") == {"type": "npm", "package": "@scope/pkg", "version": "1.2.3"}
    assert parse_package("pypi:mcp-x==0.4") == {"type": "pypi", "package": "mcp-x", "version": "0.4"}
    for bad in ("pypi:mcp-x", "cargo:x==1", "npm:x@"):
        try:
            parse_package(bad)
        except ValueError as e:
            assert "pypi:NAME==VERSION" in str(e)
        else:
            raise AssertionError(bad)
