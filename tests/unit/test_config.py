from __future__ import annotations

from pathlib import Path

import pytest

from bosun.catalog.loader import load_catalog
from bosun.config import ConfigError, MountGrant, Settings


def test_mounts_are_read_only_unless_rw(tmp_path: Path) -> None:
    assert MountGrant.parse(f"{tmp_path}:/projects").read_only
    assert MountGrant.parse(f"{tmp_path}:/projects:ro").read_only
    assert not MountGrant.parse(f"{tmp_path}:/projects:rw").read_only


@pytest.mark.parametrize("spec", ["/nope/does-not-exist:/x", "relative", "{tmp}:relative", "{tmp}:/x:rwx"])
def test_bad_mounts_are_refused_with_a_reason(spec: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mount"):
        MountGrant.parse(spec.format(tmp=tmp_path))


def test_enable_checks_the_entry_asks_for_that_mount(tmp_path: Path) -> None:
    s = Settings()
    with pytest.raises(ConfigError, match="does not ask for a mount at /elsewhere"):
        s.enable(load_catalog().get("filesystem"), [MountGrant(source=tmp_path, target="/elsewhere")])


def test_settings_round_trip(tmp_path: Path) -> None:
    s = Settings()
    s.enable(load_catalog().get("filesystem"), [MountGrant(source=tmp_path, target="/projects")])
    s.enable(load_catalog().get("time"), [])
    s.servers["time"].enabled = False
    s.save(tmp_path / "config.yaml")
    loaded = Settings.load(tmp_path / "config.yaml")
    assert loaded.enabled() == ["filesystem"]
    assert loaded.servers["filesystem"].mounts[0].source == tmp_path
