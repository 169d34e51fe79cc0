from __future__ import annotations

import json

from bosun.catalog.loader import load_catalog
from bosun.catalog.sbom import build_sbom, purl, rows
from bosun.images.inventory import Package, parse


def test_purls_per_ecosystem() -> None:
    assert str(purl(Package("pypi", "Mcp_Server.Time", "1.0"))) == "pkg:pypi/mcp-server-time@1.0"
    assert (
        str(purl(Package("npm", "@modelcontextprotocol/sdk", "1.2.3"))) == "pkg:npm/%40modelcontextprotocol/sdk@1.2.3"
    )
    assert str(purl(Package("npm", "zod", "3.0.0"))) == "pkg:npm/zod@3.0.0"
    assert (
        str(purl(Package("deb", "python3", "3.11.2-1+b1"))) == "pkg:deb/debian/python3@3.11.2-1%2Bb1?distro=debian-12"
    )
    assert (  # the source package rides along, since Debian's advisories name it
        str(purl(Package("deb", "libc6", "2.36-9", "glibc")))
        == "pkg:deb/debian/libc6@2.36-9?distro=debian-12&upstream=glibc"
    )


def test_inventory_parsing_ignores_noise_and_duplicates() -> None:
    out = "deb\tbash\t5.2\nnot a package line\npypi\tmcp\t2.3.0\npypi\tmcp\t2.3.0\nnpm\t\t1\nrpm\tx\t1\n"
    assert parse(out) == [Package("deb", "bash", "5.2"), Package("pypi", "mcp", "2.3.0")]


def test_sbom_document_describes_the_image_and_its_packages() -> None:
    entry = load_catalog().get("memory")
    packages = [Package("npm", "@modelcontextprotocol/server-memory", "2026.8.31"), Package("deb", "libc6", "2.36")]
    doc = json.loads(build_sbom(entry, "sha256:abc", packages))
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    assert doc["metadata"]["component"]["type"] == "container"
    assert doc["metadata"]["component"]["version"] == "sha256:abc"
    assert {c["purl"] for c in doc["components"]} == {
        "pkg:npm/%40modelcontextprotocol/server-memory@2026.8.31",
        "pkg:deb/debian/libc6@2.36?distro=debian-12",
    }
    assert [r["ecosystem"] for r in rows(json.dumps(doc))] == ["deb", "npm"]
