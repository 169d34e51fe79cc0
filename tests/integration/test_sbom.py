"""SBOMs of real built images, read from inside the images."""

from __future__ import annotations

import json

from _util import run_bosun

from bosun.catalog.sbom import sbom_path
from bosun.home import Home
from bosun.images.lock import Lock


def _purls(home: Home, name: str) -> set[str]:
    locked = Lock.load(home.lock_file).images[name]
    doc = json.loads(sbom_path(home.root, locked.image_id).read_text())
    assert doc["metadata"]["component"]["version"] == locked.image_id
    return {c["purl"] for c in doc["components"]}


def test_python_server_sbom_lists_its_package_dependencies_and_debian(home: Home) -> None:
    purls = _purls(home, "time")
    assert "pkg:pypi/mcp-server-time@2026.10.19" in purls
    assert any(p.startswith("pkg:pypi/mcp@") for p in purls)  # a transitive dependency
    assert any(p.startswith("pkg:deb/debian/python3.11@") for p in purls)
    assert any(p.startswith("pkg:deb/debian/libc6@") for p in purls)


def test_node_server_sbom_lists_npm_packages(home: Home) -> None:
    purls = _purls(home, "memory")
    assert "pkg:npm/%40modelcontextprotocol/server-memory@2026.8.31" in purls
    assert any(p.startswith("pkg:npm/%40modelcontextprotocol/sdk@") for p in purls)
    assert sum(p.startswith("pkg:npm/") for p in purls) > 20


def test_image_sbom_command(home: Home) -> None:
    table = run_bosun(home, "image", "sbom", "time").stdout
    assert "mcp-server-time" in table and "pkg:pypi/mcp-server-time@2026.10.19" in table
    doc = json.loads(run_bosun(home, "image", "sbom", "memory", "--format", "cyclonedx").stdout)
    assert doc["bomFormat"] == "CycloneDX"
    missing = run_bosun(home, "image", "sbom", "git", check=False)
    assert missing.returncode == 1 and "bosun catalog build git" in missing.stderr
