"""The hardening audit on real images: ours pass, a deliberately careless one does not."""

from __future__ import annotations

import json
from collections.abc import Iterator

import docker
import pytest
from _util import run_bosun

from bosun.catalog.loader import load_catalog
from bosun.home import Home
from bosun.images.audit import audit
from bosun.images.base import BASE_DEBIAN
from bosun.images.build import build_entry
from bosun.images.dockerbuild import ImageBuildError, build
from bosun.images.lock import Lock

CARELESS = f"""FROM {BASE_DEBIAN}
ENV SERVICE_API_TOKEN=not-really-but-looks-like-one
RUN mkdir -p /root/.ssh && printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\\\\nxx\\\\n' > /root/.ssh/id_ed25519 \\
 && mkdir -p /root/.npm/_cacache && chmod 0777 /srv
"""


@pytest.fixture(scope="module")
def careless_image(docker_client: docker.DockerClient) -> Iterator[str]:
    tag = "bosun/test-careless:latest"
    build(docker_client, CARELESS, tag, lambda _m: None)
    yield tag
    docker_client.images.remove(tag, force=True)


def test_built_server_images_score_full_marks(home: Home, docker_client: docker.DockerClient) -> None:
    for name in ("time", "memory"):
        report = audit(docker_client, Lock.load(home.lock_file).images[name].image_id)
        assert report.score == 100, report.findings
        assert Lock.load(home.lock_file).images[name].audit_score == 100


def test_careless_image_is_caught_on_every_check(careless_image: str, docker_client: docker.DockerClient) -> None:
    report = audit(docker_client, careless_image)
    checks = {f.check for f in report.findings}
    assert checks >= {"non-root user", "setuid/setgid files", "world-writable paths", "secrets in layers",
                      "package manager caches"}  # fmt: skip
    details = " ".join(f.detail for f in report.findings)
    assert "SERVICE_API_TOKEN" in details and "/root/.ssh/id_ed25519" in details and "/srv" in details
    assert report.score < 80


def test_build_fails_closed_below_the_threshold(home: Home, docker_client: docker.DockerClient) -> None:
    before = Lock.load(home.lock_file).images["time"]
    with pytest.raises(ImageBuildError, match=r"scored 100/100 .* below the required 101"):
        build_entry(docker_client, load_catalog().get("time"), home, lambda _m: None, force=True, min_audit_score=101)
    assert Lock.load(home.lock_file).images["time"] == before


def test_image_audit_command(home: Home) -> None:
    report = json.loads(run_bosun(home, "image", "audit", "time", "--json").stdout)
    assert report["score"] == 100 and report["findings"] == []
