"""Entries from project folders: runtime and command detection, the files that make the image, its version."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bosun.catalog.models import DockerfileSource, PathSource
from bosun.catalog.project import ProjectError, detect_command, entry_from_dir


def _python(folder: Path, scripts: dict[str, str]) -> Path:
    folder.mkdir(exist_ok=True)
    lines = ['[project]\nname = "x"\nversion = "1"\n', "[project.scripts]\n"]
    lines += [f'{k} = "{v}"\n' for k, v in scripts.items()]
    (folder / "pyproject.toml").write_text("".join(lines))
    return folder


def test_python_command_is_the_one_console_script(tmp_path: Path) -> None:
    entry = entry_from_dir("notes", _python(tmp_path / "p", {"notes-server": "n:main"}))
    assert entry.command == ["notes-server"] and entry.source.runtime == "python"
    with pytest.raises(ProjectError, match=r"declares a, b.*--command"):
        detect_command(_python(tmp_path / "q", {"a": "m:a", "b": "m:b"}), "python")
    assert entry_from_dir("two", tmp_path / "q", command="a --stdio").command == ["a", "--stdio"]


@pytest.mark.parametrize(
    ("package", "command"),
    [
        ({"bin": "./dist/cli.js"}, ["node", "/app/dist/cli.js"]),
        ({"bin": {"srv": "bin/srv.js"}}, ["node", "/app/bin/srv.js"]),
        ({"main": "index.js"}, ["node", "/app/index.js"]),
    ],
)
def test_node_command_comes_from_bin_or_main(tmp_path: Path, package: dict[str, object], command: list[str]) -> None:
    (tmp_path / "package.json").write_text(json.dumps({"name": "x", **package}))
    entry = entry_from_dir("srv", tmp_path)
    assert entry.command == command and entry.base_image == "bosun/base-node:latest"


def test_ambiguous_or_bad_folders_are_refused_with_what_to_pass(tmp_path: Path) -> None:
    _python(tmp_path, {"a": "m:a"})
    (tmp_path / "package.json").write_text("{}")
    with pytest.raises(ProjectError, match=r"holds python and node.*--kind"):
        entry_from_dir("x", tmp_path)
    assert entry_from_dir("x", tmp_path, kind="python").command == ["a"]
    with pytest.raises(ProjectError, match="name"):
        entry_from_dir("Not_A_Name", tmp_path, kind="python")
    with pytest.raises(ProjectError, match="not a folder"):
        entry_from_dir("x", tmp_path / "missing")
    with pytest.raises(ValueError, match="absolute"):
        PathSource(type="path", path=Path("relative"), runtime="python")


def test_a_dockerfile_folder_needs_its_command_and_must_hold_the_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM bosun/base-python\n")
    with pytest.raises(ProjectError, match="--command"):
        entry_from_dir("d", tmp_path)
    entry = entry_from_dir("d", tmp_path, command="python3 /srv/s.py")
    assert isinstance(entry.source, DockerfileSource) and entry.base_image == "bosun/build-d"
    assert [relative for relative, _ in entry.source.files()] == ["Dockerfile"]
    (tmp_path / "Dockerfile").unlink()
    with pytest.raises(ValueError, match="has no Dockerfile"):
        entry.source.files()


def test_the_image_holds_the_project_files_only_and_its_version_follows_them(tmp_path: Path) -> None:
    folder = _python(tmp_path / "p", {"s": "m:main"})
    (folder / "m.py").write_text("def main(): pass\n")
    for ignored in (".git", "node_modules", "__pycache__", ".venv"):
        (folder / ignored).mkdir()
        (folder / ignored / "f").write_text("x")
    (folder / "cache.pyc").write_bytes(b"x")
    (tmp_path / "outside.txt").write_text("not the project's")
    os.symlink(tmp_path / "outside.txt", folder / "link.txt")
    source = entry_from_dir("s", folder).source
    assert isinstance(source, PathSource)
    assert [relative for relative, _ in source.files()] == ["m.py", "pyproject.toml"]
    before = source.version
    assert before.startswith("local-") and source.version == before  # stable while nothing changes
    (folder / "m.py").write_text("def main(): return 1\n")
    assert source.version != before
