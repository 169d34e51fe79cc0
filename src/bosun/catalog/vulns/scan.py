"""Matching an image's SBOM against the vulnerability database, and the start-time verdict."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date

from packageurl import PackageURL

from bosun.catalog.sbom import sbom_path
from bosun.catalog.vulns.db import VulnDB
from bosun.catalog.vulns.osv import ECOSYSTEMS, Severity, affects, ecosystem_matches, normal_name
from bosun.catalog.vulns.waivers import Waivers
from bosun.home import Home


@dataclass(frozen=True)
class Finding:
    id: str
    aliases: tuple[str, ...]
    severity: Severity
    ecosystem: str
    package: str
    version: str
    fixed: tuple[str, ...]
    summary: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"severity": self.severity.name}

    def describe(self) -> str:
        fix = f", fixed in {', '.join(self.fixed)}" if self.fixed else ", no fix yet"
        return f"{self.id} ({self.severity.name}) in {self.ecosystem} {self.package} {self.version}{fix}"


def _components(sbom: str) -> list[tuple[str, list[str], str]]:
    """(purl type, names to look up, version) per SBOM component Bosun can match."""
    out = []
    for c in json.loads(sbom).get("components", []):
        if not c.get("purl"):
            continue
        p = PackageURL.from_string(c["purl"])
        if p.type not in ECOSYSTEMS or not p.version:
            continue
        name = f"{p.namespace}/{p.name}" if p.type == "npm" and p.namespace else p.name
        names = [name]
        # Debian advisories name the source package (glibc), images install binaries (libc6).
        upstream = (p.qualifiers or {}).get("upstream") if isinstance(p.qualifiers, dict) else None
        if upstream:
            names.append(upstream)
        out.append((p.type, names, p.version))
    return out


def scan(db: VulnDB, sbom: str) -> list[Finding]:
    """Every advisory that affects a component of the SBOM at the version it is installed."""
    found: dict[tuple[str, str, str], Finding] = {}
    components = _components(sbom)
    known = db.advisories_for({(eco, name) for eco, names, _ in components for name in names})
    for eco, names, version in components:
        for name in names:
            for adv in known.get((eco, name), []):
                hit = any(
                    ecosystem_matches(a.package.ecosystem, eco)
                    and normal_name(eco, a.package.name) == normal_name(eco, name)
                    and affects(a, eco, version)
                    for a in adv.affected
                )
                if hit:
                    found[(adv.id, eco, names[0])] = Finding(
                        adv.id, tuple(adv.aliases), adv.level(), eco, names[0], version,
                        tuple(adv.fixed_in(eco, normal_name(eco, name))), adv.summary or adv.details[:120],
                    )  # fmt: skip
    return sorted(found.values(), key=lambda f: (-f.severity, f.id, f.package))


@dataclass(frozen=True)
class Verdict:
    blocking: list[Finding]
    waived: list[Finding]
    below: list[Finding]


def judge(findings: list[Finding], server: str, block_at: Severity | None, waivers: Waivers, today: date) -> Verdict:
    """Split findings into those that stop the server, those waived for it, and those under the bar.

    ``block_at`` None means never block; unknown severity never reaches a bar on its own."""
    blocking, waived, below = [], [], []
    for f in findings:
        if block_at is None or f.severity < block_at or f.severity is Severity.unknown:
            below.append(f)
        elif waivers.active_for(server, (f.id, *f.aliases), today):
            waived.append(f)
        else:
            blocking.append(f)
    return Verdict(blocking, waived, below)


def check_image(home: Home, server: str, image_id: str, block_at: str, today: date) -> Verdict | None:
    """The verdict for one built image, or None when there is no database or no SBOM to judge by."""
    db = VulnDB(home.vuln_db)
    path = sbom_path(home.root, image_id)
    if not db.exists() or not path.exists():
        return None
    threshold = None if block_at == "never" else Severity[block_at]
    return judge(scan(db, path.read_text()), server, threshold, Waivers.load(home.waivers_file), today)
