"""OSV advisories (the format of osv.dev, GitHub's and PyPA's databases): reading one, deciding
whether it affects a package version, and how severe it is.

Versions are compared by each ecosystem's own rules through ``univers`` (PEP 440 for PyPI, semver
for npm, dpkg ordering for Debian); a string compare would call 10.0 older than 9.0.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import IntEnum
from typing import Any

from cvss import CVSS3, CVSS4
from cvss.exceptions import CVSSError
from pydantic import BaseModel, ConfigDict, Field, field_validator
from univers.versions import DebianVersion, InvalidVersion, PypiVersion, SemverVersion, Version


class Severity(IntEnum):
    unknown = 0
    low = 1
    medium = 2
    high = 3
    critical = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        word = text.strip().lower()
        return cls[{"moderate": "medium"}.get(word, word)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class Event(_Lenient):
    introduced: str | None = None
    fixed: str | None = None
    last_affected: str | None = None
    limit: str | None = None


class Range(_Lenient):
    type: str
    events: list[Event] = []


class PackageRef(_Lenient):
    ecosystem: str
    name: str
    purl: str | None = None


class Affected(_Lenient):
    package: PackageRef
    ranges: list[Range] = []
    versions: list[str] = []
    database_specific: dict[str, Any] = {}
    ecosystem_specific: dict[str, Any] = {}


class SeverityScore(_Lenient):
    type: str
    score: str


class Advisory(_Lenient):
    id: str = Field(min_length=1)
    modified: str = ""
    summary: str = ""
    details: str = ""
    aliases: list[str] = []
    severity: list[SeverityScore] = []
    affected: list[Affected] = []
    database_specific: dict[str, Any] = {}

    @field_validator("modified", mode="before")
    @classmethod
    def _timestamp_text(cls, v: Any) -> str:
        # YAML exports (PyPA's) leave timestamps unquoted, so they arrive as datetimes.
        return v.isoformat() if isinstance(v, datetime) else str(v)

    def level(self) -> Severity:
        """The advisory's severity: the database's own rating where it gives one, else the CVSS base score."""
        for specific in (self.database_specific, *(a.database_specific for a in self.affected)):
            rated = specific.get("severity")
            if isinstance(rated, str):
                try:
                    return Severity.parse(rated)
                except KeyError:
                    pass
        best = Severity.unknown
        for s in self.severity:
            try:
                rated = CVSS4(s.score).severity if s.type == "CVSS_V4" else CVSS3(s.score).severities()[0]
            except (CVSSError, ValueError, IndexError):
                continue
            if isinstance(rated, str) and rated.lower() in Severity.__members__:
                best = max(best, Severity.parse(rated))
        return best

    def fixed_in(self, ecosystem: str, name: str) -> list[str]:
        return [
            e.fixed
            for a in self.affected
            if ecosystem_matches(a.package.ecosystem, ecosystem) and normal_name(ecosystem, a.package.name) == name
            for r in a.ranges
            for e in r.events
            if e.fixed
        ]


# purl type -> (OSV ecosystem prefix, version class)
ECOSYSTEMS: dict[str, tuple[str, type[Version]]] = {
    "pypi": ("PyPI", PypiVersion),
    "npm": ("npm", SemverVersion),
    "deb": ("Debian", DebianVersion),
}
DEBIAN_RELEASE = "12"


def ecosystem_matches(osv: str, purl_type: str) -> bool:
    """``Debian:12`` applies to our bookworm images, ``Debian:11`` does not; others match by name."""
    prefix = ECOSYSTEMS[purl_type][0]
    base, _, release = osv.partition(":")
    return base == prefix and (purl_type != "deb" or release in ("", DEBIAN_RELEASE))


def normal_name(purl_type: str, name: str) -> str:
    # PyPI names compare case-insensitively with -, _ and . all equal (PEP 503).
    return re.sub(r"[-_.]+", "-", name).lower() if purl_type == "pypi" else name


def _parse(cls: type[Version], text: str) -> Version | None:
    try:
        return cls(text)
    except (InvalidVersion, ValueError, TypeError):
        return None


def _in_range(rng: Range, version: Version, cls: type[Version]) -> bool:
    """OSV's rule: walk the events in version order; introduced opens, fixed/last_affected close."""
    if rng.type not in ("ECOSYSTEM", "SEMVER"):
        return False  # GIT ranges name commits; the version list covers those advisories
    points: list[tuple[Version | None, Event]] = []
    for e in rng.events:
        raw = e.introduced or e.fixed or e.last_affected
        if raw is None:
            continue
        points.append((None if e.introduced == "0" else _parse(cls, raw), e))
    affected = False
    for at, e in sorted(points, key=lambda p: (p[0] is not None, p[0] or 0)):
        if e.introduced and (at is None or version >= at):
            affected = True
        elif (e.fixed and at is not None and version >= at) or (e.last_affected and at is not None and version > at):
            affected = False
    return affected


def affects(affected: Affected, purl_type: str, version_text: str) -> bool:
    """Whether this ``affected`` block covers ``version_text`` of the package it names."""
    if version_text in affected.versions:
        return True
    cls = ECOSYSTEMS[purl_type][1]
    version = _parse(cls, version_text)
    return version is not None and any(_in_range(r, version, cls) for r in affected.ranges)
