from __future__ import annotations

import json
from pathlib import Path

import pytest

from bosun.catalog.loader import load_catalog
from bosun.config import ConfigError, MountGrant, Settings, sensitive_reason


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


@pytest.mark.parametrize(
    ("path", "expect"),
    [
        ("/", "whole host filesystem"),
        ("/etc", "inside /etc"),
        ("/etc/ssl", "inside /etc"),
        ("/var/run/docker.sock", "Docker socket"),
        ("{home}", "contains {home}/.ssh (SSH keys)"),
        ("{home}/.aws", "inside {home}/.aws (AWS credentials)"),
        ("{home}/.config", "contains {home}/.config/gcloud"),
    ],
)
def test_sensitive_paths_are_named_with_what_they_expose(
    path: str, expect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    reason = sensitive_reason(Path(path.format(home=tmp_path)))
    assert reason is not None and expect.format(home=tmp_path) in reason


def test_ordinary_folders_and_bosun_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    project = tmp_path / "home" / "src" / "project"
    project.mkdir(parents=True)
    assert sensitive_reason(project) is None
    assert "Bosun's own state" in (sensitive_reason(tmp_path / "home" / ".bosun", tmp_path / "home" / ".bosun") or "")


def test_sensitive_mount_needs_the_explicit_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    with pytest.raises(ConfigError, match=r"refused: .*SSH keys.*--allow-sensitive"):
        MountGrant.parse(f"{tmp_path}/.ssh:/keys")
    assert MountGrant.parse(f"{tmp_path}/.ssh:/keys", allow_sensitive=True).read_only


def test_a_servers_own_call_timeout_overrides_the_gateways_and_none_may_be_zero(tmp_path: Path) -> None:
    s = Settings.model_validate({"call_timeout_s": 60, "servers": {"slow": {"call_timeout_s": 900}, "time": {}}})
    assert (s.call_timeout("slow"), s.call_timeout("time"), s.call_timeout("unknown")) == (900, 60, 60)
    assert Settings().call_timeout("time") == 300
    for bad in ({"call_timeout_s": 0}, {"servers": {"slow": {"call_timeout_s": -1}}}):
        (tmp_path / "config.yaml").write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match="call_timeout_s"):
            Settings.load(tmp_path / "config.yaml")
