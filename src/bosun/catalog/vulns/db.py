"""The offline vulnerability database: OSV advisories imported from files, kept in SQLite.

Nothing is fetched: an operator brings OSV exports (a folder of JSON/YAML records, or the zip files
osv.dev publishes per ecosystem) and imports them; newer versions of a record replace older ones.
"""

from __future__ import annotations

import json
import sqlite3
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from bosun.catalog.vulns.osv import ECOSYSTEMS, Advisory, normal_name

_SCHEMA = """
CREATE TABLE IF NOT EXISTS advisory (id TEXT PRIMARY KEY, modified TEXT NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS affects (ecosystem TEXT NOT NULL, name TEXT NOT NULL, id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS affects_package ON affects (ecosystem, name);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_OSV_TO_PURL = {prefix: purl_type for purl_type, (prefix, _) in ECOSYSTEMS.items()}


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    other_ecosystems: int = 0  # advisories for ecosystems no Bosun image contains
    invalid: list[str] = field(default_factory=list)


def _records(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                if member.endswith((".json", ".yaml", ".yml")):
                    yield f"{path}:{member}", z.read(member)
    elif path.is_file():
        yield str(path), path.read_bytes()
    else:
        for p in sorted(path.rglob("*")):
            if p.is_file() and p.suffix in (".json", ".yaml", ".yml"):
                yield str(p), p.read_bytes()


class VulnDB:
    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path)
        conn.executescript(_SCHEMA)
        return conn

    def import_path(self, path: Path) -> ImportReport:
        """Load every OSV record in a file, folder or zip; one transaction, so a bad run changes nothing."""
        report = ImportReport()
        conn = self._connect()
        try:
            with conn:
                for origin, raw in _records(path):
                    try:
                        data = json.loads(raw) if origin.endswith(".json") else yaml.safe_load(raw)
                        advisory = Advisory.model_validate(data)
                    except ValidationError as e:
                        where = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
                        report.invalid.append(f"{origin}: not an OSV record: {where}")
                        continue
                    except (ValueError, yaml.YAMLError) as e:
                        report.invalid.append(f"{origin}: not readable: {str(e).splitlines()[0]}")
                        continue
                    self._store(conn, advisory, report)
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('imported_from', ?)", (str(path),))
        finally:
            conn.close()
        return report

    def _store(self, conn: sqlite3.Connection, advisory: Advisory, report: ImportReport) -> None:
        packages = {
            (_OSV_TO_PURL[a.package.ecosystem.partition(":")[0]], a.package.name)
            for a in advisory.affected
            if a.package.ecosystem.partition(":")[0] in _OSV_TO_PURL
        }
        if not packages:
            report.other_ecosystems += 1
            return
        row = conn.execute("SELECT modified FROM advisory WHERE id = ?", (advisory.id,)).fetchone()
        if row and row[0] >= advisory.modified:
            report.unchanged += 1
            return
        conn.execute("DELETE FROM affects WHERE id = ?", (advisory.id,))
        conn.execute(
            "INSERT OR REPLACE INTO advisory VALUES (?, ?, ?)",
            (advisory.id, advisory.modified, advisory.model_dump_json()),
        )
        conn.executemany(
            "INSERT INTO affects VALUES (?, ?, ?)",
            [(eco, normal_name(eco, name), advisory.id) for eco, name in sorted(packages)],
        )
        if row:
            report.updated += 1
        else:
            report.added += 1

    def advisories_for(self, packages: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[Advisory]]:
        """Every advisory naming each package (purl type, name), affected or not; one connection for all."""
        if not self.exists():
            return {}
        found: dict[tuple[str, str], list[Advisory]] = {}
        conn = self._connect()
        try:
            for ecosystem, name in packages:
                rows = conn.execute(
                    "SELECT a.record FROM affects f JOIN advisory a ON a.id = f.id "
                    "WHERE f.ecosystem = ? AND f.name = ?",
                    (ecosystem, normal_name(ecosystem, name)),
                ).fetchall()
                found[(ecosystem, name)] = [Advisory.model_validate(json.loads(r[0])) for r in rows]
        finally:
            conn.close()
        return found

    def stats(self) -> dict[str, int]:
        if not self.exists():
            return {}
        conn = self._connect()
        try:
            rows = conn.execute("SELECT ecosystem, COUNT(DISTINCT id) FROM affects GROUP BY ecosystem").fetchall()
        finally:
            conn.close()
        return {eco: n for eco, n in rows}
