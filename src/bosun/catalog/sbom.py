"""CycloneDX SBOMs for the images Bosun builds, with package URLs per ecosystem."""

from __future__ import annotations

import json
from pathlib import Path

from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from bosun.catalog.models import Entry
from bosun.files import write_atomic
from bosun.images.inventory import Package

DEBIAN_DISTRO = "debian-12"


def purl(p: Package) -> PackageURL:
    if p.ecosystem == "deb":
        qualifiers = {"distro": DEBIAN_DISTRO} | ({"upstream": p.upstream} if p.upstream else {})
        return PackageURL("deb", "debian", p.name, p.version, qualifiers=qualifiers)
    if p.ecosystem == "pypi":
        # PyPI names compare case- and separator-insensitively; the purl spec wants the normal form.
        return PackageURL("pypi", None, p.name.lower().replace("_", "-").replace(".", "-"), p.version)
    namespace, _, name = p.name.rpartition("/")
    return PackageURL("npm", namespace or None, name, p.version)


def build_sbom(entry: Entry, image_id: str, packages: list[Package]) -> str:
    """The image's SBOM as CycloneDX 1.6 JSON; the image itself is the described component."""
    bom = Bom()
    image = Component(
        name=entry.image_tag.split(":")[0],
        version=image_id,
        type=ComponentType.CONTAINER,
        bom_ref=image_id,
        description=f"{entry.title}: {entry.source.describe()}",
    )
    bom.metadata.component = image
    parts = [
        Component(name=p.name, version=p.version, type=ComponentType.LIBRARY, purl=purl(p), bom_ref=str(purl(p)))
        for p in packages
    ]
    bom.components.update(parts)
    # The image contains every package; the finer graph between packages is not recorded.
    bom.register_dependency(image, parts)
    return JsonV1Dot6(bom).output_as_string(indent=2)


def sbom_path(root: Path, image_id: str) -> Path:
    return root / "sbom" / f"{image_id.removeprefix('sha256:')}.cdx.json"


def save_sbom(root: Path, image_id: str, document: str) -> Path:
    path = sbom_path(root, image_id)
    write_atomic(path, document)
    return path


def rows(document: str) -> list[dict[str, str]]:
    """The SBOM's components as table rows (ecosystem from the purl type)."""
    out = []
    for c in json.loads(document).get("components", []):
        kind = PackageURL.from_string(c["purl"]).type if c.get("purl") else "?"
        out.append({"ecosystem": kind, "name": c["name"], "version": c.get("version", ""), "purl": c.get("purl", "")})
    return sorted(out, key=lambda r: (r["ecosystem"], r["name"]))
