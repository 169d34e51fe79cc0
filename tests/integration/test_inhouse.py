"""A server of your own, from its project folder: `bosun server add` builds, signs and pins it, and the
gateway serves it with the same hardening and governance as a catalog server."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from _util import bosun_cmd, env_for, run_bosun
from mcp import Client, StdioServerParameters

from bosun.audit.log import AuditLog
from bosun.catalog.signing import verify_image
from bosun.home import Home
from bosun.images.lock import Lock

pytestmark = pytest.mark.anyio

PROJECT = Path(__file__).resolve().parents[1] / "fixtures" / "inhouse"


async def test_a_python_project_folder_is_built_signed_pinned_and_served(home: Home, tmp_path: Path) -> None:
    folder = tmp_path / "notes-server"
    shutil.copytree(PROJECT, folder)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "junk.pyc").write_bytes(b"not part of the image")

    added = run_bosun(home, "server", "add", "notes", "--from-dir", str(folder))
    assert "wrote" in added.stdout and "1 tools, 0 prompts, 0 resources captured" in added.stdout, added.stderr
    assert "enabled notes" in added.stdout
    locked = Lock.load(home.lock_file).images["notes"]
    assert locked.tag.startswith("bosun/mcp-notes:local-") and locked.audit_score >= 80
    provenance = verify_image(home.root, "notes", locked.image_id)  # signed by this home's key, like any build
    assert provenance["buildDefinition"]["externalParameters"]["source"]["type"] == "path"
    assert "folder" in run_bosun(home, "image", "verify", "notes").stdout

    params = StdioServerParameters(command=sys.executable, args=bosun_cmd("gateway", "run")[1:], env=env_for(home))
    async with Client(params) as client:
        assert "notes__shout" in {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("notes__shout", {"text": "ship it"})
        assert not result.is_error and result.structured_content == {"result": "SHIP IT!"}
    calls = [r for r in AuditLog(home.audit_db).records() if r.kind == "tools/call" and r.server == "notes"]
    assert [(r.tool, r.outcome) for r in calls] == [("shout", "ok")]

    # A change to the project is a new version: the lock no longer matches until it is built again.
    again = run_bosun(home, "server", "add", "notes", "--from-dir", str(folder), check=False)
    assert again.returncode != 0 and "--force" in again.stderr
    (folder / "inhouse_notes.py").write_text((folder / "inhouse_notes.py").read_text().replace("!", "!!"))
    rebuilt = run_bosun(home, "catalog", "build", "notes")
    assert "built  bosun/mcp-notes:local-" in rebuilt.stdout
    assert Lock.load(home.lock_file).images["notes"].tag != locked.tag


def test_a_folder_that_is_not_a_project_gets_a_clear_error(home: Home, tmp_path: Path) -> None:
    refused = run_bosun(home, "server", "add", "nothing", "--from-dir", str(tmp_path), check=False)
    assert refused.returncode != 0
    assert "no pyproject.toml, setup.py or package.json" in refused.stderr and "--runtime" in refused.stderr
    assert not (home.root / "catalog" / "nothing.yaml").exists()
