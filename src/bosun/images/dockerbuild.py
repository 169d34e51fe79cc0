"""One ``docker build`` from an in-memory context, with progress and a clear error on failure."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path

import docker
from docker.errors import APIError, BuildError

Progress = Callable[[str], None]

# The host's CA bundle, so builds that reach the package registries trust what the host trusts
# (some networks re-sign TLS). It is a list of public certificates, not a secret.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_CA_PATH = "/etc/bosun/build-ca.crt"


class ImageBuildError(RuntimeError):
    pass


def context_tar(files: Mapping[str, bytes | Path]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in files.items():
            if isinstance(content, Path):
                tar.add(str(content), arcname=name)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    buf.seek(0)
    return buf


def build(
    client: docker.DockerClient,
    dockerfile: str,
    tag: str,
    progress: Progress,
    extra_files: Mapping[str, bytes | Path] | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Build ``tag`` and return its image id.

    Host networking is used because these builds install from the package registries and
    the engine's default bridge may have no route out; nothing built here runs with it.
    """
    files: dict[str, bytes | Path] = {"Dockerfile": dockerfile.encode()}
    if HOST_CA_BUNDLE.exists():
        files["build-ca.crt"] = HOST_CA_BUNDLE
    files.update(extra_files or {})
    tail: list[str] = []
    try:
        for chunk in client.api.build(
            fileobj=context_tar(files),
            custom_context=True,
            tag=tag,
            rm=True,
            forcerm=True,
            network_mode="host",
            labels=dict(labels or {}),
            decode=True,
        ):
            if "error" in chunk:
                raise ImageBuildError(f"building {tag} failed: {chunk['error'].strip()}\n" + "".join(tail[-20:]))
            line = chunk.get("stream", "")
            if line.strip():
                tail.append(line)
                progress(line.rstrip())
    except (APIError, BuildError) as e:
        raise ImageBuildError(f"building {tag} failed: {e}") from None
    return str(client.images.get(tag).id)
