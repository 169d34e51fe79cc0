"""The conformance suite's client mode, pointed at the gateway's upstream side.

The suite starts a mock server for one scenario and runs ``CMD URL`` (``MCP_CONFORMANCE_SCENARIO`` names
the scenario). This script makes that mock a remote entry in a scratch Bosun home (``auth: oauth`` for
the ``auth/`` scenarios, authorized with the real ``bosun server auth`` and a stand-in browser), starts
``bosun gateway run`` over stdio, and as an SDK client of the gateway lists the tools and calls each
one, answering elicitation with the schema's defaults. What the mock sees is Bosun as its client.

    .venv/bin/python scripts/conformance_client.py URL     (run by scripts/conformance.py --client)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import mcp.types as types
from mcp import Client, StdioServerParameters

from bosun.catalog.sources import load as load_catalog
from bosun.config import Settings
from bosun.home import Home

BROWSER = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "remote" / "browser.py"


def _value(schema: dict[str, Any]) -> Any:
    return {"number": 1, "integer": 1, "boolean": True, "array": [], "object": {}}.get(schema.get("type", ""), "x")


async def _defaults(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    schema = getattr(params, "requested_schema", None) or {}
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    return types.ElicitResult(action="accept", content={k: v["default"] for k, v in props.items() if "default" in v})


async def _drive(env: dict[str, str]) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "bosun", "gateway", "run"], env=env)
    async with Client(params, elicitation_callback=_defaults) as client:
        for tool in (await client.list_tools()).tools:
            schema = tool.input_schema or {}
            required = schema.get("required", [])
            arguments = {k: _value(v) for k, v in schema.get("properties", {}).items() if k in required}
            result = await client.call_tool(tool.name, arguments)
            print(f"{tool.name}: {' '.join(getattr(c, 'text', '') for c in result.content)[:200]}", flush=True)


def _registered(env: dict[str, str]) -> list[str]:
    """``bosun server auth`` options for a client the scenario registered ahead of time, as an administrator
    would pass them (secrets, and the identity provider's ID token, through the secret store); none when the
    scenario gives no client."""
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    if "client_id" not in context:
        return []
    options = ["--client-id", context["client_id"]]
    kept = (("client_secret", "--client-secret"), ("private_key_pem", "--client-key"), ("idp_id_token", "--id-token"))
    for field, option in kept:
        if context.get(field):
            name = f"upstream-{option[2:]}"
            subprocess.run([sys.executable, "-m", "bosun", "secret", "set", name], input=context[field].encode(),
                           env=env, check=True)  # fmt: skip
            options += [option, name]
    if "idp_id_token" in context:  # enterprise-managed authorization (SEP-990)
        options += ["--idp-token-url", context["idp_token_endpoint"], "--idp-client-id", context["idp_client_id"]]
    if "client-credentials" in context.get("name", ""):
        options.append("--client-credentials")
    return options


def main() -> int:
    url, scenario = sys.argv[1], os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    work = Path(tempfile.mkdtemp(prefix="bosun-conformance-client-"))
    try:
        home = Home(work / "home").ensure()
        source: dict[str, Any] = {"type": "remote", "url": url, "allow_http": True}
        if scenario.startswith("auth/"):
            source["auth"] = "oauth"
        entry = {"name": "upstream", "title": "Conformance mock", "description": "The suite's mock server.",
                 "source": source}  # fmt: skip
        (home.root / "catalog").mkdir(exist_ok=True)
        (home.root / "catalog" / "upstream.yaml").write_text(json.dumps(entry))
        settings = Settings.load(home.config_file)
        settings.enable(load_catalog(home.root).get("upstream"), [])
        settings.save(home.config_file)
        env = {**os.environ, "BOSUN_HOME": str(home.root)}
        if scenario.startswith("auth/"):
            browser = {"BROWSER": f"{sys.executable} {BROWSER} - %s"}
            options = _registered(env)
            argv = [sys.executable, "-m", "bosun", "server", "auth", "upstream", *options]
            subprocess.run(argv, env={**env, **browser}, check=True, timeout=60)
            if "--client-credentials" in options or "--id-token" in options:
                # The token `bosun server auth` fetched is dropped, so the gateway has to get its own.
                subprocess.run([sys.executable, "-m", "bosun", "secret", "rm", "oauth-upstream-access"], env=env,
                               check=True)  # fmt: skip
        asyncio.run(_drive(env))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
