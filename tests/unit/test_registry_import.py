"""server.json import: every field mapped or reported (samples written here from the published format)."""

from __future__ import annotations

import json
from pathlib import Path

from bosun.catalog.formats.registry import NPM_COMMAND, convert, entry_name

SAMPLES = Path(__file__).parent.parent / "samples" / "registry"


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
    assert e.network.allow_hosts == []
    gaps = "\n".join(r.unsupported)
    assert "runtimeArguments --python" in gaps
    assert "packages[1] (oci docker.io/example/time): another package was used" in gaps
    assert "_meta.io.github.stacklok: extension not understood" in gaps
    notes = "\n".join(r.notes)
    assert "--verbose: optional with no value, left out" in notes
    assert "repository: informational" in notes


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
