"""Vulnerability gating on the real engine, with real OSV advisories for packages really installed."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml
from _util import run_bosun

from bosun.catalog.loader import load_catalog
from bosun.catalog.sbom import sbom_path
from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.images.lock import Lock
from bosun.runtime.docker import DockerBackend

pytestmark = pytest.mark.anyio

OSV = Path(__file__).parent.parent / "samples" / "osv"
ADVISORY = "GHSA-hc55-p739-j48w"


def test_pypi_images_ship_without_installers_and_scan_clean(home: Home) -> None:
    out = run_bosun(home, "vuln", "db", "import", str(OSV)).stdout
    assert "4 added" in out and "0 invalid" in out
    sbom = sbom_path(home.root, Lock.load(home.lock_file).images["time"].image_id).read_text()
    # Debian's venv seeds pip 23.0.1 and setuptools 66.1.1, hit by PYSEC-2023-228 and GHSA-cx63-2mw6-8hw5.
    assert "pkg:pypi/setuptools@" not in sbom and "pkg:pypi/pip@" not in sbom
    scan = run_bosun(home, "image", "scan", "time")
    assert "0 finding(s)" in scan.stdout


async def test_vulnerable_server_is_refused_until_waived(home: Home) -> None:
    run_bosun(home, "vuln", "db", "import", str(OSV))
    old = load_catalog().get("filesystem").model_dump(mode="json")
    old |= {"name": "old-filesystem", "source": old["source"] | {"version": "2025.3.28"}}
    (home.root / "catalog").mkdir(exist_ok=True)
    (home.root / "catalog" / "old-filesystem.yaml").write_text(yaml.safe_dump(old))
    run_bosun(home, "catalog", "build", "old-filesystem")
    run_bosun(home, "server", "enable", "old-filesystem", "--mount", f"{home.root.parent / 'files'}:/projects")

    scan = run_bosun(home, "image", "scan", "old-filesystem", check=False)
    assert scan.returncode == 1 and ADVISORY in scan.stdout and "BLOCKS" in scan.stdout

    async def start() -> tuple[bool, str]:
        # Starting (and initializing) is what the bar decides; this old release's tool list predates
        # MCP's rule that every inputSchema names its type, so no call is made here.
        async with Gateway(home, DockerBackend()) as gw:
            try:
                session = await gw.upstream("old-filesystem", "t").session()
            except Exception as e:  # the refusal, as the gateway reports it to the caller
                return False, str(e)
            return True, session.server_info.name if session.server_info else ""

    started, text = await start()
    assert not started and "refusing to start old-filesystem: 1 vulnerability at or above high" in text
    assert f"{ADVISORY} (high) in npm @modelcontextprotocol/server-filesystem 2025.3.28" in text
    assert "fixed in 2025.7.1" in text and "bosun vuln waive" in text

    until = (date.today() + timedelta(days=7)).isoformat()
    bad = run_bosun(home, "vuln", "waive", ADVISORY, "--server", "old-filesystem", "--reason", "x", "--until",
                    "2020-01-01", check=False)  # fmt: skip
    assert bad.returncode == 1 and "between today and a year from now" in bad.stderr
    run_bosun(home, "vuln", "waive", ADVISORY, "--server", "old-filesystem", "--reason", "isolated test", "--until",
              until)  # fmt: skip
    assert "active" in run_bosun(home, "vuln", "waivers").stdout
    started, text = await start()
    assert started and "filesystem" in text, text

    run_bosun(home, "vuln", "unwaive", ADVISORY, "--server", "old-filesystem")
    run_bosun(home, "vuln", "block-at", "critical")  # the bar moved above the finding: it starts unwaived
    started, text = await start()
    assert started, text
