"""Catalog sources: several catalogs at once, each with a trust level, merged by clear precedence.

Precedence when two sources define the same name: your own entries (``BOSUN_HOME/catalog``) win;
then higher trust beats lower (high > medium > low), with the built-in catalog first among the
high ones; among equals, the source added earlier wins. A lower-trust catalog can therefore never
replace a server you already trust by publishing one with the same name. Every clash is recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bosun.catalog.formats.common import ImportResult
from bosun.catalog.formats.read import read_path
from bosun.catalog.loader import BUILTIN, Catalog, CatalogError, Origin, load_catalog, parse_entry
from bosun.catalog.models import Entry
from bosun.files import YamlFile
from bosun.home import Home

RESERVED = ("local", "builtin")


class Trust(StrEnum):
    high = "high"
    medium = "medium"
    low = "low"


_RANK = {Trust.high: 0, Trust.medium: 1, Trust.low: 2}


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    path: Path
    trust: Trust = Trust.low
    allow_unsigned: bool = False
    # server name -> pypi:NAME==VERSION / npm:NAME@VERSION, for formats that only name an image
    packages: dict[str, str] = {}

    @model_validator(mode="after")
    def _unsigned_only_when_low(self) -> Source:
        if self.allow_unsigned and self.trust is not Trust.low:
            raise ValueError("only a low-trust source may allow unsigned images (use --trust low)")
        if self.name in RESERVED:
            raise ValueError(f"{self.name!r} is reserved; choose another source name")
        return self


class Sources(YamlFile):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def invalid(cls, path: Path, problem: str) -> Exception:
        return CatalogError([f"{path}: {problem}"])

    sources: list[Source] = Field(default_factory=list)

    def add(self, source: Source) -> None:
        if any(s.name == source.name for s in self.sources):
            raise ValueError(f"a source named {source.name!r} exists; remove it first (`bosun catalog rm`)")
        self.sources.append(source)

    def remove(self, name: str) -> None:
        if not any(s.name == name for s in self.sources):
            known = ", ".join(s.name for s in self.sources) or "none"
            raise ValueError(f"no source named {name!r} (sources: {known})")
        self.sources = [s for s in self.sources if s.name != name]


def read_source(source: Source) -> list[ImportResult]:
    """What one source holds, each server with its import report."""
    if not source.path.exists():
        return [ImportResult(str(source.path), unsupported=["the source's path does not exist"])]
    return read_path(source.path, source.packages)


def _local(dirs: Iterable[Path]) -> list[tuple[Entry, Origin]]:
    # Your own entries must all be valid: a broken one fails loudly rather than silently losing to a source.
    files = [(str(p), p.read_text()) for d in dirs if d.is_dir() for p in sorted(d.glob("*.y*ml"))]
    out, problems = [], []
    for origin, text in files:
        try:
            out.append((parse_entry(text, origin), Origin("local", "high", origin)))
        except CatalogError as e:
            problems += e.problems
    if problems:
        raise CatalogError(problems)
    return out


def load(root: Path) -> Catalog:
    """The catalog as the gateway and CLI see it: local entries, the built-in ones, every source."""
    ranked: list[tuple[Entry, Origin]] = _local([root / "catalog"])
    ranked += [(entry, BUILTIN) for entry in load_catalog()]
    sources = Sources.load(Home(root).sources_file).sources
    ordered = sorted(enumerate(sources), key=lambda item: (_RANK[item[1].trust], item[0]))
    for _, src in ordered:
        for result in read_source(src):
            if result.entry is not None:
                ranked.append((result.entry, Origin(src.name, src.trust.value, result.origin, src.allow_unsigned)))
    entries: dict[str, Entry] = {}
    origins: dict[str, Origin] = {}
    shadowed: list[tuple[str, str, str]] = []
    for entry, origin in ranked:
        if entry.name in entries:
            if origin.source != origins[entry.name].source:
                shadowed.append((entry.name, origins[entry.name].source, origin.source))
            continue
        entries[entry.name], origins[entry.name] = entry, origin
    return Catalog(entries, origins, shadowed)
