"""Signed provenance on the real engine: only an image signed by a trusted key, untampered and
naming exactly the image to run, may start."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from _util import run_bosun

from bosun.catalog.loader import load_catalog
from bosun.catalog.signing import attestation_path, sign_image
from bosun.gateway.core import Gateway
from bosun.home import Home
from bosun.images.lock import Lock
from bosun.runtime.docker import DockerBackend

pytestmark = pytest.mark.anyio


def _ids(home: Home) -> tuple[str, str]:
    images = Lock.load(home.lock_file).images
    return images["time"].image_id, images["memory"].image_id


async def _refusal(home: Home) -> str:
    async with Gateway(home, DockerBackend()) as gw:
        result = await gw.call_tool("t", "time__get_current_time", {"timezone": "UTC"})
        assert result.is_error
        assert not (await gw.call_tool("t", "memory__read_graph", {})).is_error  # others still start
        return str(result.content[0].text)  # type: ignore[union-attr]


def _verify_fails(home: Home, expect: str) -> None:
    r = run_bosun(home, "image", "verify", "time", check=False)
    assert r.returncode == 1 and expect in r.stderr, r.stderr


async def test_signed_image_verifies_and_runs(home: Home) -> None:
    out = run_bosun(home, "image", "verify", "time").stdout
    assert "verified bosun/mcp-time:2026.10.19" in out and "pypi mcp-server-time==2026.10.19" in out
    envelopes = json.loads(attestation_path(home.root, _ids(home)[0]).read_text())
    kinds = {json.loads(base64.b64decode(e["payload"]))["predicateType"] for e in envelopes}
    assert kinds == {"https://slsa.dev/provenance/v1", "https://cyclonedx.org/bom"}


async def test_tampered_attestation_is_refused(home: Home) -> None:
    path = attestation_path(home.root, _ids(home)[0])
    envelopes = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(envelopes[0]["payload"]))
    statement["predicate"]["buildDefinition"]["externalParameters"]["source"]["version"] = "6.6.6"
    envelopes[0]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(envelopes))
    _verify_fails(home, "not by a trusted key (or the attestation was altered)")
    assert "refusing to start time" in await _refusal(home)


async def test_image_signed_by_an_unknown_key_is_refused(home: Home, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    time_id = _ids(home)[0]
    entry = load_catalog().get("time")
    sign_image(stranger, entry, time_id, "sha256:" + "0" * 64, json.dumps({"bomFormat": "CycloneDX"}))
    shutil.copy(attestation_path(stranger, time_id), attestation_path(home.root, time_id))
    _verify_fails(home, "not by a trusted key")
    assert "not by a trusted key" in await _refusal(home)


async def test_attestation_of_another_image_does_not_apply(home: Home) -> None:
    time_id, memory_id = _ids(home)
    shutil.copy(attestation_path(home.root, memory_id), attestation_path(home.root, time_id))
    _verify_fails(home, "names another image")
    assert "names another image" in await _refusal(home)


async def test_unsigned_image_is_refused_with_the_fix(home: Home) -> None:
    attestation_path(home.root, _ids(home)[0]).unlink()
    _verify_fails(home, "is not signed; rebuild it with `bosun catalog build time --force`")
    assert "is not signed" in await _refusal(home)
    run_bosun(home, "catalog", "build", "time")  # the build re-signs an image that lost its attestation
    assert "verified" in run_bosun(home, "image", "verify", "time").stdout
