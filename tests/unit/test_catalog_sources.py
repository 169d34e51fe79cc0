"""Several catalogs at once: trust decides who wins a name, and every clash is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from bosun.catalog import sources
from bosun.catalog.loader import CatalogError
from bosun.catalog.sources import Source, Sources, Trust


def write_entry(folder: Path, name: str, title: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    entry = {
        "name": name,
        "title": title,
        "description": "d",
        "source": {"type": "pypi", "package": "mcp-server-time", "version": "2026.10.19"},
        "command": ["mcp-server-time"],
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(entry))


def add(root: Path, name: str, trust: Trust, **kw: object) -> Path:
    folder = root.parent / f"src-{name}"
    found = Sources.load(root / "sources.yaml")
    found.add(Source(name=name, path=folder, trust=trust, **kw))  # type: ignore[arg-type]
    found.save(root / "sources.yaml")
    return folder


def test_precedence_local_then_trust_then_order(tmp_path: Path) -> None:
    root = tmp_path / "home"
    low = add(root, "community", Trust.low)
    high = add(root, "team", Trust.high)
    medium = add(root, "partner", Trust.medium)
    write_entry(low, "time", "squatted")  # a low-trust catalog cannot replace a built-in server
    write_entry(low, "weather", "community weather")
    write_entry(medium, "weather", "partner weather")
    write_entry(high, "weather", "team weather")
    write_entry(high, "wiki", "team wiki")
    write_entry(medium, "wiki", "partner wiki")
    write_entry(root / "catalog", "wiki", "my wiki")

    catalog = sources.load(root)
    assert catalog.get("time").title == "Time"
    assert catalog.origin("time").source == "builtin"
    assert (catalog.get("weather").title, catalog.origin("weather").source) == ("team weather", "team")
    assert (catalog.get("wiki").title, catalog.origin("wiki").trust) == ("my wiki", "high")
    assert catalog.origin("wiki").source == "local"
    assert sorted(catalog.shadowed) == sorted(
        [
            ("time", "builtin", "community"),
            ("weather", "team", "partner"),
            ("weather", "team", "community"),
            ("wiki", "local", "team"),
            ("wiki", "local", "partner"),
        ]
    )


def test_equal_trust_earlier_source_wins(tmp_path: Path) -> None:
    root = tmp_path / "home"
    first = add(root, "first", Trust.medium)
    second = add(root, "second", Trust.medium)
    write_entry(second, "notes", "second")
    write_entry(first, "notes", "first")
    assert sources.load(root).get("notes").title == "first"


def test_unsigned_images_only_for_low_trust_and_only_when_asked(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="only a low-trust source may allow unsigned images"):
        Source(name="x", path=tmp_path, trust=Trust.medium, allow_unsigned=True)
    root = tmp_path / "home"
    folder = add(root, "lab", Trust.low, allow_unsigned=True)
    write_entry(folder, "lab-tool", "lab")
    catalog = sources.load(root)
    assert catalog.origin("lab-tool").allow_unsigned
    assert not catalog.origin("time").allow_unsigned


def test_names_clash_and_missing_sources(tmp_path: Path) -> None:
    root = tmp_path / "home"
    add(root, "gone", Trust.low)  # its folder was never created
    with pytest.raises(ValueError, match="exists"):
        add(root, "gone", Trust.low)
    with pytest.raises(ValidationError, match="reserved"):
        Source(name="builtin", path=tmp_path)
    assert [r.unsupported for r in sources.read_source(Sources.load(root / "sources.yaml").sources[0])] == [
        ["the source's path does not exist"]
    ]
    assert "time" in sources.load(root).entries  # one missing source does not break the catalog
    found = Sources.load(root / "sources.yaml")
    found.remove("gone")
    with pytest.raises(ValueError, match="no source named 'gone'"):
        found.remove("gone")


def test_a_broken_sources_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sources.yaml").write_text("sources: [{name: x, trust: sky}]\n")
    with pytest.raises(CatalogError, match=r"sources\.yaml"):
        sources.load(tmp_path)
