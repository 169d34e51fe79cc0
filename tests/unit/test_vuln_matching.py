"""Vulnerability matching: ecosystem-aware version ranges on real OSV records, severity, the verdict."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path

import yaml

from bosun.catalog.loader import load_catalog
from bosun.catalog.sbom import build_sbom
from bosun.catalog.vulns.db import VulnDB
from bosun.catalog.vulns.osv import Advisory, Severity, affects
from bosun.catalog.vulns.scan import judge, scan
from bosun.catalog.vulns.waivers import Waiver, Waivers
from bosun.images.inventory import Package

OSV = Path(__file__).parent.parent / "samples" / "osv"


def real(name: str) -> Advisory:
    path = OSV / name
    data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    return Advisory.model_validate(data)


def hit(adv: Advisory, purl_type: str, version: str) -> bool:
    return any(affects(a, purl_type, version) for a in adv.affected)


def test_real_npm_record_with_last_affected_and_a_second_range() -> None:
    adv = real("GHSA-hc55-p739-j48w.json")
    expected = {"0.5.1": True, "0.6.2": True, "2.0.1": False, "2025.1.14": True, "2025.3.28": True,
                "2025.7.1": False, "2026.8.31": False}  # fmt: skip
    assert {v: hit(adv, "npm", v) for v in expected} == expected
    assert adv.level() is Severity.high  # the database's own rating


def test_real_pypi_records_compare_by_pep_440() -> None:
    redos = real("PYSEC-2022-43012.yaml")
    assert hit(redos, "pypi", "65.5.0") and not hit(redos, "pypi", "66.1.1")
    assert hit(redos, "pypi", "9.1")  # 9.1 < 65.5.1, though "9.1" > "65.5.1" as text
    assert not hit(redos, "pypi", "100.0")
    injection = real("GHSA-cx63-2mw6-8hw5.json")
    assert hit(injection, "pypi", "70.0.0rc1") and not hit(injection, "pypi", "70.0.0")  # pre-releases come first
    pip = real("PYSEC-2023-228.yaml")
    assert hit(pip, "pypi", "23.0.1") and not hit(pip, "pypi", "23.3")
    assert pip.level() is Severity.low  # from its CVSS 3.1 vector (3.3): no database rating given


def test_debian_versions_compare_by_dpkg_rules() -> None:
    adv = Advisory.model_validate(
        {
            "id": "DEBIAN-TEST-1",
            "affected": [
                {
                    "package": {"ecosystem": "Debian:12", "name": "glibc"},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.36-9+deb12u4"}]}],
                }
            ],
        }
    )
    assert hit(adv, "deb", "2.36-9+deb12u3")
    assert not hit(adv, "deb", "2.36-9+deb12u10")  # u10 sorts before u4 as text, after it for dpkg
    assert hit(adv, "deb", "2.36-8")
    assert not hit(adv, "deb", "1:2.30-1")  # an epoch outranks every version without one
    assert adv.level() is Severity.unknown


def test_explicit_version_lists_and_severity_from_cvss_v4() -> None:
    adv = Advisory.model_validate(
        {
            "id": "X-1",
            "severity": [
                {"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:P/PR:N/UI:P/VC:N/VI:N/VA:H/SC:H/SI:H/SA:H"}
            ],
            "affected": [{"package": {"ecosystem": "npm", "name": "left-pad"}, "versions": ["1.0.0", "1.0.1"]}],
        }
    )
    assert hit(adv, "npm", "1.0.1") and not hit(adv, "npm", "1.0.2")
    assert adv.level() is Severity.high  # CVSS 4.0 base 7.3


def _db(tmp_path: Path) -> VulnDB:
    db = VulnDB(tmp_path / "vulns.db")
    report = db.import_path(OSV)
    assert (report.added, report.invalid) == (4, [])
    return db


def test_import_folder_zip_updates_and_bad_records(tmp_path: Path) -> None:
    db = _db(tmp_path)
    assert db.stats() == {"npm": 1, "pypi": 3}
    assert db.import_path(OSV).unchanged == 4  # idempotent
    newer = json.loads((OSV / "GHSA-hc55-p739-j48w.json").read_text()) | {"modified": "2026-01-01T00:00:00Z"}
    other = {"id": "GO-2024-0001", "modified": "x", "affected": [{"package": {"ecosystem": "Go", "name": "x"}}]}
    bundle = tmp_path / "all.zip"
    with zipfile.ZipFile(bundle, "w") as z:
        z.writestr("GHSA-hc55-p739-j48w.json", json.dumps(newer))
        z.writestr("GO-2024-0001.json", json.dumps(other))
        z.writestr("broken.json", "{not json")
        z.writestr("no-id.json", json.dumps({"affected": []}))
    report = db.import_path(bundle)
    assert (report.updated, report.other_ecosystems, len(report.invalid)) == (1, 1, 2)
    assert "no-id.json: not an OSV record: id" in "\n".join(report.invalid)


def test_scan_matches_the_sbom_including_debian_source_packages(tmp_path: Path) -> None:
    db = _db(tmp_path)
    db.import_path(tmp_path / "none")  # a missing path imports nothing and breaks nothing
    glibc = {
        "id": "DEBIAN-TEST-2",
        "modified": "2026-01-01",
        "database_specific": {"severity": "CRITICAL"},
        "affected": [{"package": {"ecosystem": "Debian:12", "name": "glibc"}, "ranges": [
            {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.36-9+deb12u9"}]}]}],
    }  # fmt: skip
    (tmp_path / "deb").mkdir()
    (tmp_path / "deb" / "glibc.json").write_text(json.dumps(glibc))
    db.import_path(tmp_path / "deb")
    packages = [
        Package("pypi", "setuptools", "66.1.1"),
        Package("pypi", "Pip", "23.0.1"),
        Package("npm", "@modelcontextprotocol/server-filesystem", "2026.8.31"),
        Package("deb", "libc6", "2.36-9+deb12u7", "glibc"),
    ]
    sbom = build_sbom(load_catalog().get("time"), "sha256:" + "1" * 64, packages)
    found = {(f.id, f.package, f.severity.name) for f in scan(db, sbom)}
    assert found == {
        ("DEBIAN-TEST-2", "libc6", "critical"),
        ("GHSA-cx63-2mw6-8hw5", "setuptools", "high"),
        ("PYSEC-2023-228", "pip", "low"),  # purls carry the normal form of PyPI names
    }


def test_verdict_waivers_hold_per_server_and_until_their_date(tmp_path: Path) -> None:
    db = _db(tmp_path)
    sbom = build_sbom(load_catalog().get("time"), "sha256:" + "2" * 64, [Package("pypi", "setuptools", "66.1.1")])
    findings = scan(db, sbom)
    now = datetime.now(UTC)
    waivers = Waivers()
    assert [f.id for f in judge(findings, "time", Severity.high, waivers, date(2026, 11, 23)).blocking] == [
        "GHSA-cx63-2mw6-8hw5"
    ]
    waivers.add(Waiver(id="CVE-2024-6345", server="time", reason="not reachable", until=date(2026, 12, 1), by="t",
                       created=now))  # fmt: skip
    v = judge(findings, "time", Severity.high, waivers, date(2026, 11, 23))
    assert (len(v.blocking), len(v.waived)) == (0, 1)  # waived by its CVE alias
    assert len(judge(findings, "fetch", Severity.high, waivers, date(2026, 11, 23)).blocking) == 1
    assert len(judge(findings, "time", Severity.high, waivers, date(2026, 12, 2)).blocking) == 1  # expired
    assert len(judge(findings, "time", Severity.critical, Waivers(), date(2026, 11, 23)).below) == 1
    assert len(judge(findings, "time", None, Waivers(), date(2026, 11, 23)).blocking) == 0
    assert waivers.remove("CVE-2024-6345", "time") and not waivers.remove("CVE-2024-6345", "time")
