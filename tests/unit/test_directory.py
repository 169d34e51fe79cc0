"""Agent tokens and groups as a running gateway sees them when the agents file changes under it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bosun.gateway import agents as agents_module
from bosun.gateway.agents import Agents, Directory


def _write(path: Path, change: Callable[[Agents], None]) -> None:
    """Apply ``change`` to the agents file, as `bosun agent` does. Its mtime is moved on by a millisecond too:
    the file system's clock can give two writes this close together the same mtime."""
    before = os.stat(path).st_mtime_ns
    book = Agents.load(path)
    change(book)
    book.save(path)
    os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def test_a_revoked_token_is_refused_at_its_next_request(tmp_path: Path) -> None:
    path = tmp_path / "agents.yaml"
    book = Agents()
    token = book.add("ci-bot", ["ci"])
    book.save(path)
    directory = Directory(path)
    assert directory.authenticate(token) == "ci-bot" and directory.groups("ci-bot") == ["ci"]
    _write(path, lambda b: b.revoke("ci-bot"))
    assert directory.authenticate(token) is None


def test_groups_are_read_again_once_they_are_older_than_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "agents.yaml"
    book = Agents()
    book.add("ci-bot", ["ci"])
    book.save(path)
    clock = [100.0]
    monkeypatch.setattr(agents_module.time, "monotonic", lambda: clock[0])
    directory = Directory(path)
    assert directory.groups("ci-bot") == ["ci"]

    def regroup(b: Agents) -> None:
        b.agents[0].groups = ["ci", "deploy"]

    _write(path, regroup)
    clock[0] += agents_module.GROUPS_FRESH_S / 2
    assert directory.groups("ci-bot") == ["ci"]  # within the window: the file is not looked at
    clock[0] += agents_module.GROUPS_FRESH_S
    assert directory.groups("ci-bot") == ["ci", "deploy"]
