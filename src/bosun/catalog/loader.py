"""Reading catalog entries from YAML files, with errors that name the file, the field and the problem."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bosun.catalog.models import SOURCE_TYPES, Entry


class CatalogError(Exception):
    """One or more catalog files are invalid. ``str()`` lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(entry)"


def _problem(err: Any) -> str:
    """``field: what is wrong``, in the entry's own terms: pydantic puts the source's kind (the union's
    tag) into the path and words an unknown kind in terms of tags."""
    loc = tuple(err["loc"])
    if loc[:1] == ("source",) and len(loc) > 1 and loc[1] in SOURCE_TYPES:
        loc = loc[:1] + loc[2:]
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        kinds = ", ".join(repr(t) for t in SOURCE_TYPES)
        found = err.get("ctx", {}).get("tag")
        return f"{_field_path((*loc, 'type'))}: must be one of {kinds}" + (f", not {found!r}" if found else "")
    return f"{_field_path(loc)}: {err['msg']}"


def parse_entry(text: str, origin: str) -> Entry:
    """Parse one entry from YAML text; ``origin`` names it in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise CatalogError([f"{origin}{where}: not valid YAML: {problem}"]) from None
    if not isinstance(data, dict):
        raise CatalogError([f"{origin}: expected a mapping of entry fields, got {type(data).__name__}"])
    try:
        return Entry.model_validate(data)
    except ValidationError as e:
        raise CatalogError([f"{origin}: {_problem(err)}" for err in e.errors()]) from None


@dataclass(frozen=True)
class Origin:
    """Where an entry came from, and how far that source is trusted."""

    source: str  # "local" (BOSUN_HOME/catalog), "builtin", or a name given to `bosun catalog add`
    trust: str  # high, medium or low
    file: str
    allow_unsigned: bool = False


BUILTIN = Origin("builtin", "high", "builtin")


@dataclass(frozen=True)
class Catalog:
    entries: dict[str, Entry]
    origins: dict[str, Origin] = field(default_factory=dict)
    # (name, the source whose entry is used, the source whose entry lost)
    shadowed: list[tuple[str, str, str]] = field(default_factory=list)

    def origin(self, name: str) -> Origin:
        return self.origins.get(name, BUILTIN)

    def get(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none"
            raise KeyError(f"no catalog entry named {name!r} (known: {known})") from None

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self.entries.values(), key=lambda e: e.name))


def _builtin_files() -> list[tuple[str, str]]:
    root = resources.files("bosun.catalog") / "builtin"
    return sorted((f"builtin/{f.name}", f.read_text()) for f in root.iterdir() if f.name.endswith((".yaml", ".yml")))


def load_catalog(extra_dirs: Iterable[Path] = ()) -> Catalog:
    """The built-in entries, overridden by entries of the same name in ``extra_dirs`` (in order).

    Every invalid file is reported, not only the first, so one run shows all that needs fixing.
    """
    files = _builtin_files()
    for d in extra_dirs:
        if d.is_dir():
            files += sorted((str(p), p.read_text()) for p in d.glob("*.y*ml"))
    entries: dict[str, Entry] = {}
    problems: list[str] = []
    for origin, text in files:
        try:
            entry = parse_entry(text, origin)
        except CatalogError as e:
            problems += e.problems
            continue
        entries[entry.name] = entry
    if problems:
        raise CatalogError(problems)
    return Catalog(entries)
