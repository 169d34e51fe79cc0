from __future__ import annotations

from pathlib import Path

import pytest

from bosun.catalog.loader import CatalogError, load_catalog, parse_entry

VALID = """
name: demo
title: Demo
description: d
source: {type: pypi, package: mcp-server-time, version: "1.2.3"}
command: [mcp-server-time]
"""


def test_builtin_catalog_has_the_required_real_servers() -> None:
    catalog = load_catalog()
    expected = {"time", "git", "fetch", "filesystem", "memory", "everything", "sequential-thinking"}
    assert expected <= set(catalog.entries)
    assert catalog.get("time").source.type == "pypi"
    assert catalog.get("memory").source.package == "@modelcontextprotocol/server-memory"


def test_every_builtin_entry_pins_an_exact_version() -> None:
    for entry in load_catalog():
        assert entry.source.version[0].isdigit(), entry.name
        assert not any(c in entry.source.version for c in "^~<>=* "), entry.name


def test_valid_entry_gets_secure_defaults() -> None:
    e = parse_entry(VALID, "demo.yaml")
    assert e.network.allow_hosts == []
    assert e.scope == "shared"
    assert e.resources.pids == 128


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (("1.2.3", "^1.2"), "source.version", "exact version"),
        (("name: demo", "name: Demo__x"), "name", "pattern"),
        (
            ("type: pypi", "type: cargo"),
            "source.type",
            "one of 'pypi', 'npm', 'path', 'dockerfile', 'image', 'remote', not 'cargo'",
        ),
        (("command: [mcp-server-time]", "command: []"), "command", "at least 1"),
        (("title: Demo", "title: Demo\nsurprise: 1"), "surprise", "Extra inputs"),
    ],
)
def test_invalid_entry_error_names_file_field_and_problem(change: tuple[str, str], field: str, problem: str) -> None:
    with pytest.raises(CatalogError) as err:
        parse_entry(VALID.replace(*change), "bad.yaml")
    msg = str(err.value)
    assert msg.startswith(f"bad.yaml: {field}: "), msg
    assert problem in msg


def test_yaml_syntax_error_gives_line_and_column() -> None:
    with pytest.raises(CatalogError, match=r"^broken.yaml:3:\d+: not valid YAML"):
        parse_entry("name: x\ntitle: y\n  bad: [\n", "broken.yaml")


def test_user_entries_override_builtin_and_all_problems_are_reported(tmp_path: Path) -> None:
    (tmp_path / "time.yaml").write_text(VALID.replace("name: demo", "name: time").replace("title: Demo", "title: Mine"))
    assert load_catalog([tmp_path]).get("time").title == "Mine"
    (tmp_path / "a.yaml").write_text("name: a\n")
    (tmp_path / "b.yaml").write_text("- not a mapping\n")
    with pytest.raises(CatalogError) as err:
        load_catalog([tmp_path])
    assert any(p.startswith(f"{tmp_path}/a.yaml: title: ") for p in err.value.problems)
    assert any(p.startswith(f"{tmp_path}/b.yaml: expected a mapping") for p in err.value.problems)


def test_entry_digest_changes_only_with_what_shapes_the_image() -> None:
    a = parse_entry(VALID, "x")
    assert a.digest() == parse_entry(VALID.replace("description: d", "description: other"), "x").digest()
    assert a.digest() != parse_entry(VALID.replace("1.2.3", "1.2.4"), "x").digest()
