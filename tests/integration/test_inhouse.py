"""A server of your own, from its project folder: `bosun server add` builds, signs and pins it, and the
gateway serves it with the same hardening and governance as a catalog server."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import docker
import pytest
from _util import audit_log, bosun_cmd, env_for, run_bosun
from mcp import Client, StdioServerParameters

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
    assert "path " in run_bosun(home, "image", "verify", "notes").stdout

    params = StdioServerParameters(command=sys.executable, args=bosun_cmd("gateway", "run")[1:], env=env_for(home))
    async with Client(params) as client:
        assert "notes__shout" in {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("notes__shout", {"text": "ship it"})
        assert not result.is_error and result.structured_content == {"result": "SHIP IT!"}
    calls = [r for r in audit_log(home).records() if r.kind == "tools/call" and r.server == "notes"]
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
    assert "no pyproject.toml, setup.py, package.json or Dockerfile" in refused.stderr and "--kind" in refused.stderr
    assert not (home.root / "catalog" / "nothing.yaml").exists()


async def _shout(home: Home, name: str) -> str:
    params = StdioServerParameters(command=sys.executable, args=bosun_cmd("gateway", "run")[1:], env=env_for(home))
    async with Client(params) as client:
        result = await client.call_tool(f"{name}__shout", {"text": "ok"})
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_a_dockerfile_is_built_and_finished_and_an_unsigned_image_runs_only_once_signed(
    home: Home, tmp_path: Path
) -> None:
    # A Dockerfile FROM an image the engine already has (the time server's, which has the SDK).
    base = Lock.load(home.lock_file).images["time"].tag
    context = tmp_path / "ctx"
    context.mkdir()
    shutil.copy(PROJECT / "inhouse_notes.py", context)
    dockerfile = f"FROM {base}\nUSER root\nCOPY inhouse_notes.py /srv/inhouse_notes.py\nUSER 10001:10001\n"
    (context / "Dockerfile").write_text(dockerfile)
    added = run_bosun(home, "server", "add", "docknotes", "--from-dir", str(context),
                      "--command", "python3 /srv/inhouse_notes.py")  # fmt: skip
    assert "1 tools, 0 prompts, 0 resources captured" in added.stdout, added.stderr
    locked = Lock.load(home.lock_file).images["docknotes"]
    verify_image(home.root, "docknotes", locked.image_id)
    assert await _shout(home, "docknotes") == "OK!"

    # The user's own build, before Bosun finished and signed it: an image Bosun did not build.
    own = docker.from_env().images.get(f"bosun/build-docknotes:{locked.tag.rpartition(':')[2]}").id
    entry = {"name": "adopted", "title": "Adopted", "description": "An image from elsewhere.",
             "source": {"type": "image", "image": own}, "command": ["python3", "/srv/inhouse_notes.py"]}  # fmt: skip
    (home.root / "catalog" / "adopted.yaml").write_text(json.dumps(entry))
    built = run_bosun(home, "catalog", "build", "adopted", check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "NOT signed" in built.stderr and "bosun image sign adopted" in built.stderr
    run_bosun(home, "server", "enable", "adopted")
    refused = await _shout(home, "adopted")
    assert "not built by Bosun and is not signed" in refused and "bosun image sign adopted" in refused

    signed = run_bosun(home, "image", "sign", "adopted")
    assert "signed" in signed.stdout and "1 tools" in signed.stdout
    assert await _shout(home, "adopted") == "OK!"
    assert "vouched for" in run_bosun(home, "image", "verify", "adopted").stdout
