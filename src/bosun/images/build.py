"""Building one hardened image per catalog entry from its real registry package, or from a project
folder of the user's own installed the same way."""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import docker
from docker.errors import ImageNotFound

from bosun.catalog.models import Entry, PathSource
from bosun.catalog.sbom import build_sbom, save_sbom
from bosun.catalog.signing import attestation_path, sign_image
from bosun.home import Home
from bosun.images.audit import DEFAULT_MIN_SCORE, audit
from bosun.images.base import DROP_PRIVILEGED_FILES, SERVER_UID, ensure_base_images
from bosun.images.dockerbuild import BUILD_CA_PATH, ImageBuildError, build
from bosun.images.inventory import inventory
from bosun.images.lock import Lock, LockedImage

Progress = Callable[[str], None]

_CLEAN_APT = "rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb"
# The venv's seeded pip and setuptools are installers, not the server: a server never needs them at
# run time, and Debian's seeded versions carry real advisories. setuptools stays if a package needs it.
_DROP_INSTALLERS = (
    "(/opt/venv/bin/pip show setuptools 2>/dev/null | grep -q '^Required-by: .' "
    "|| /opt/venv/bin/pip uninstall -y -q setuptools) && /opt/venv/bin/pip uninstall -y -q pip"
)


def render_dockerfile(entry: Entry) -> str:
    """The Dockerfile for an entry. Package specs are quoted: entry text never reaches a shell raw."""
    src = entry.source
    lines = [f"FROM {entry.base_image}", "USER root", f"COPY build-ca.crt {BUILD_CA_PATH}"]
    if entry.system_packages:
        pkgs = " ".join(shlex.quote(p) for p in entry.system_packages)
        lines.append(
            "RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
            f"--no-install-recommends {pkgs} && {_CLEAN_APT} && {DROP_PRIVILEGED_FILES}"
        )
    if isinstance(src, PathSource):
        # The project folder arrives in the build context as src/ (see build_entry).
        lines.append(f"COPY src {'/src' if src.runtime == 'python' else '/app'}")
    if src.runtime == "python":
        spec = "/src" if isinstance(src, PathSource) else shlex.quote(f"{src.package}=={src.version}")
        cleanup = " && rm -rf /src" if isinstance(src, PathSource) else ""
        lines += [
            f"RUN python3 -m venv /opt/venv && PIP_CERT={BUILD_CA_PATH} /opt/venv/bin/pip install -q "
            f"--no-cache-dir --disable-pip-version-check {spec}{cleanup} && {_DROP_INSTALLERS}",
            "ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin",
        ]
    else:
        spec = "" if isinstance(src, PathSource) else " " + shlex.quote(f"{src.package}@{src.version}")
        lines += [
            f"RUN mkdir -p /app && cd /app && NODE_EXTRA_CA_CERTS={BUILD_CA_PATH} npm install --omit=dev "
            f"--no-audit --no-fund --loglevel=error{spec} && rm -rf /root/.npm /tmp/*",
            "ENV PATH=/app/node_modules/.bin:/usr/local/bin:/usr/bin:/bin NODE_ENV=production",
        ]
    lines += [
        "ENV HOME=/tmp PYTHONUNBUFFERED=1",
        f"USER {SERVER_UID}:{SERVER_UID}",
        "WORKDIR /tmp",
        f"ENTRYPOINT {json.dumps(entry.command)}",
        "CMD []",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class BuildResult:
    name: str
    tag: str
    image_id: str
    rebuilt: bool


def recipe_digest(entry: Entry) -> str:
    """The entry and the exact Dockerfile made from it: a change to how Bosun builds also rebuilds."""
    return "sha256:" + hashlib.sha256((entry.digest() + render_dockerfile(entry)).encode()).hexdigest()


def _up_to_date(client: docker.DockerClient, entry: Entry, locked: LockedImage | None, base_id: str) -> bool:
    if locked is None or locked.recipe_digest != recipe_digest(entry) or locked.base_image_id != base_id:
        return False
    try:
        return str(client.images.get(locked.tag).id) == locked.image_id
    except ImageNotFound:
        return False


def build_entry(
    client: docker.DockerClient,
    entry: Entry,
    home: Home,
    progress: Progress,
    force: bool = False,
    min_audit_score: int = DEFAULT_MIN_SCORE,
) -> BuildResult:
    """Build ``entry`` unless the lock says the same inputs already produced a present image.

    Every new image gets its SBOM, read from inside the image, stored under ``BOSUN_HOME/sbom``,
    and a hardening audit: below ``min_audit_score`` it is not locked, so it can never start.
    """
    bases = ensure_base_images(client, home.cache_dir, progress)
    base_id = bases[entry.base_image]
    lock = Lock.load(home.lock_file)
    locked = lock.images.get(entry.name)
    if not force and _up_to_date(client, entry, locked, base_id):
        assert locked is not None
        if not attestation_path(home.root, locked.image_id).exists():
            _attest(client, entry, locked.image_id, base_id, home, progress)
        return BuildResult(entry.name, locked.tag, locked.image_id, rebuilt=False)
    progress(f"building {entry.image_tag} from {entry.source.describe()}")
    project = entry.source.files() if isinstance(entry.source, PathSource) else []
    image_id = build(
        client,
        render_dockerfile(entry),
        entry.image_tag,
        progress,
        extra_files={f"src/{relative}": found for relative, found in project},
        labels={"io.bosun.entry": entry.name, "io.bosun.entry-digest": entry.digest()},
    )
    report = audit(client, image_id)
    progress(f"hardening audit: {report.score}/100")
    if report.score < min_audit_score:
        listed = "\n".join(f"  [{f.severity}] {f.check}: {f.detail}" for f in report.findings)
        raise ImageBuildError(
            f"{entry.image_tag} scored {report.score}/100 in the hardening audit, below the required "
            f"{min_audit_score}; it was not recorded and cannot start:\n{listed}"
        )
    _attest(client, entry, image_id, base_id, home, progress)
    # Re-read: another build may have finished meanwhile, and its record must not be lost.
    lock = Lock.load(home.lock_file)
    lock.images[entry.name] = LockedImage(
        tag=entry.image_tag,
        image_id=image_id,
        entry_digest=entry.digest(),
        recipe_digest=recipe_digest(entry),
        base_image_id=base_id,
        built_at=datetime.now(UTC),
        audit_score=report.score,
    )
    lock.save(home.lock_file)
    return BuildResult(entry.name, entry.image_tag, image_id, rebuilt=True)


def _attest(
    client: docker.DockerClient, entry: Entry, image_id: str, base_id: str, home: Home, progress: Progress
) -> None:
    """The image's SBOM, read from inside it, then provenance and SBOM signed for that exact image id."""
    packages = inventory(client, image_id)
    document = build_sbom(entry, image_id, packages)
    save_sbom(home.root, image_id, document)
    path = sign_image(home.root, entry, image_id, base_id, document)
    progress(f"SBOM with {len(packages)} packages; provenance and SBOM signed -> {path}")
