"""Building one hardened image per catalog entry from its real registry package, or from a project
folder of the user's own installed the same way."""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from bosun.catalog.models import DockerfileSource, Entry, ImageSource, PathSource, Source
from bosun.catalog.sbom import build_sbom, save_sbom, sbom_path
from bosun.catalog.signing import TrustError, attestation_path, sign_image, verify_image
from bosun.home import Home
from bosun.images.audit import DEFAULT_MIN_SCORE, audit
from bosun.images.base import DROP_PRIVILEGED_FILES, SERVER_UID, ensure_base_images
from bosun.images.dockerbuild import BUILD_CA_PATH, ImageBuildError, build
from bosun.images.inventory import inventory
from bosun.images.lock import Lock, LockedImage

Progress = Callable[[str], None]

DROP_SETID = "find / -xdev -type f -perm /6000 -exec chmod a-s {} +"
_CLEAN_APT = "rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb"
# The venv's seeded pip and setuptools are installers, not the server: a server never needs them at
# run time, and Debian's seeded versions carry real advisories. setuptools stays if a package needs it.
_DROP_INSTALLERS = (
    "(/opt/venv/bin/pip show setuptools 2>/dev/null | grep -q '^Required-by: .' "
    "|| /opt/venv/bin/pip uninstall -y -q setuptools) && /opt/venv/bin/pip uninstall -y -q pip"
)


def render_dockerfile(entry: Entry, base: str | None = None) -> str:
    """The Dockerfile for an entry. Package specs are quoted: entry text never reaches a shell raw.

    For a Dockerfile entry this is the finishing step on ``base``, the user's own build."""
    src = entry.source
    if isinstance(src, ImageSource):
        raise ValueError(f"{entry.name} names an image; Bosun does not build it")
    if isinstance(src, DockerfileSource):
        # The user's base may not be Debian: only what any image with a shell has is used.
        lines = [f"FROM {base or entry.base_image}", "USER root", f"RUN {DROP_SETID}"]
    else:
        lines = [f"FROM {entry.base_image}", "USER root", f"COPY build-ca.crt {BUILD_CA_PATH}"]
        lines += _install(entry)
    lines += [
        "ENV HOME=/tmp PYTHONUNBUFFERED=1",
        f"USER {SERVER_UID}:{SERVER_UID}",
        "WORKDIR /tmp",
        f"ENTRYPOINT {json.dumps(entry.command)}",
        "CMD []",
    ]
    return "\n".join(lines) + "\n"


def _install(entry: Entry) -> list[str]:
    src = entry.source
    assert isinstance(src, Source | PathSource)
    lines = []
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
        return [
            *lines,
            f"RUN python3 -m venv /opt/venv && PIP_CERT={BUILD_CA_PATH} /opt/venv/bin/pip install -q "
            f"--no-cache-dir --disable-pip-version-check {spec}{cleanup} && {_DROP_INSTALLERS}",
            "ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin",
        ]
    spec = "" if isinstance(src, PathSource) else " " + shlex.quote(f"{src.package}@{src.version}")
    return [
        *lines,
        f"RUN mkdir -p /app && cd /app && NODE_EXTRA_CA_CERTS={BUILD_CA_PATH} npm install --omit=dev "
        f"--no-audit --no-fund --loglevel=error{spec} && rm -rf /root/.npm /tmp/*",
        "ENV PATH=/app/node_modules/.bin:/usr/local/bin:/usr/bin:/bin NODE_ENV=production",
    ]


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
    source = entry.source
    if isinstance(source, ImageSource):
        return _adopt(client, entry, source, home, progress, min_audit_score)
    base_id = (
        _build_own(client, entry, source, progress) if isinstance(source, DockerfileSource) else bases[entry.base_image]
    )
    lock = Lock.load(home.lock_file)
    locked = lock.images.get(entry.name)
    if not force and _up_to_date(client, entry, locked, base_id):
        assert locked is not None
        if not attestation_path(home.root, locked.image_id).exists():
            _attest(client, entry, locked.image_id, base_id, home, progress)
        return BuildResult(entry.name, locked.tag, locked.image_id, rebuilt=False)
    progress(f"building {entry.image_tag} from {source.describe()}")
    project = source.files() if isinstance(source, PathSource) else []
    image_id = build(
        client,
        render_dockerfile(entry, base_id),
        entry.image_tag,
        progress,
        extra_files={f"src/{relative}": found for relative, found in project},
        labels={"io.bosun.entry": entry.name, "io.bosun.entry-digest": entry.digest()},
    )
    score = _audited(client, entry.image_tag, image_id, min_audit_score, progress)
    _attest(client, entry, image_id, base_id, home, progress)
    _record(home, entry, entry.image_tag, image_id, recipe_digest(entry), base_id, score)
    return BuildResult(entry.name, entry.image_tag, image_id, rebuilt=True)


def _audited(client: docker.DockerClient, what: str, image_id: str, min_audit_score: int, progress: Progress) -> int:
    report = audit(client, image_id)
    progress(f"hardening audit: {report.score}/100")
    if report.score < min_audit_score:
        listed = "\n".join(f"  [{f.severity}] {f.check}: {f.detail}" for f in report.findings)
        raise ImageBuildError(
            f"{what} scored {report.score}/100 in the hardening audit, below the required "
            f"{min_audit_score}; it was not recorded and cannot start:\n{listed}"
        )
    return report.score


def _record(home: Home, entry: Entry, tag: str, image_id: str, recipe: str, base_id: str, score: int) -> None:
    # Re-read: another build may have finished meanwhile, and its record must not be lost.
    lock = Lock.load(home.lock_file)
    lock.images[entry.name] = LockedImage(
        tag=tag,
        image_id=image_id,
        entry_digest=entry.digest(),
        recipe_digest=recipe,
        base_image_id=base_id,
        built_at=datetime.now(UTC),
        audit_score=score,
    )
    lock.save(home.lock_file)


def _build_own(client: docker.DockerClient, entry: Entry, source: DockerfileSource, progress: Progress) -> str:
    """The user's Dockerfile, built as written (the engine's layer cache makes an unchanged one quick);
    its image id is what Bosun's finishing step builds on."""
    files = dict(source.files())
    dockerfile = files.pop(source.dockerfile).read_text()
    files.pop("Dockerfile", None)  # the one being built goes in as Dockerfile
    progress(f"building {source.path / source.dockerfile}")
    labels = {"io.bosun.entry": entry.name}
    return build(client, dockerfile, f"{entry.base_image}:{source.version}", progress, extra_files=files, labels=labels)


def _adopt(
    client: docker.DockerClient, entry: Entry, source: ImageSource, home: Home, progress: Progress, min_audit_score: int
) -> BuildResult:
    """Take an image already in the engine, by digest: audited and inventoried like a build, but signed only
    if it already carries a trusted signature; otherwise it cannot start until `bosun image sign`."""
    try:
        image_id = str(client.images.get(source.image).id)
    except ImageNotFound:
        raise ImageBuildError(
            f"{entry.name}: no image {source.image} in the engine; load it first (`docker load`, `docker build`)"
        ) from None
    progress(f"adopting {source.image} ({image_id[7:19]}) as {entry.name}")
    score = _audited(client, source.image, image_id, min_audit_score, progress)
    packages = inventory(client, image_id)
    save_sbom(home.root, image_id, build_sbom(entry, image_id, packages))
    try:
        verify_image(home.root, entry.name, image_id)
        progress(f"SBOM with {len(packages)} packages; carries a trusted signature")
    except TrustError:
        progress(f"SBOM with {len(packages)} packages; NOT signed: it cannot start until you have reviewed it "
                 f"and run `bosun image sign {entry.name}`")  # fmt: skip
    _record(home, entry, source.image, image_id, "sha256:" + hashlib.sha256(entry.digest().encode()).hexdigest(),
            image_id, score)  # fmt: skip
    return BuildResult(entry.name, source.image, image_id, rebuilt=True)


def sign_adopted(client: docker.DockerClient, entry: Entry, home: Home) -> Path:
    """Vouch for an adopted image with this home's key: provenance (what it is, by digest) and its SBOM."""
    locked = Lock.load(home.lock_file).images.get(entry.name)
    if locked is None or not isinstance(entry.source, ImageSource):
        raise ValueError(
            f"{entry.name} is not an adopted image; `bosun catalog build {entry.name}` signs what it builds"
        )
    sbom = sbom_path(home.root, locked.image_id)
    if not sbom.exists():
        raise ValueError(f"{entry.name} has no SBOM yet: run `bosun catalog build {entry.name}`")
    if str(client.images.get(locked.image_id).id) != locked.image_id:
        raise ValueError(f"{entry.name}: the engine's image is not the one adopted")
    return sign_image(home.root, entry, locked.image_id, locked.base_image_id, sbom.read_text())


def _attest(
    client: docker.DockerClient, entry: Entry, image_id: str, base_id: str, home: Home, progress: Progress
) -> None:
    """The image's SBOM, read from inside it, then provenance and SBOM signed for that exact image id."""
    packages = inventory(client, image_id)
    document = build_sbom(entry, image_id, packages)
    save_sbom(home.root, image_id, document)
    path = sign_image(home.root, entry, image_id, base_id, document)
    progress(f"SBOM with {len(packages)} packages; provenance and SBOM signed -> {path}")
