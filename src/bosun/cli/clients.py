"""`bosun client`: wire MCP clients (Claude Code, Claude Desktop, Cursor, VS Code, Codex, Gemini CLI) to
the gateway, and unwire them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bosun.cli.output import JsonOpt, console, err_console, fail, table
from bosun.clients.wiring import CLIENTS, Client, WiringError, connect, connected, disconnect
from bosun.gateway.agents import Agents
from bosun.home import Home

client_app = typer.Typer(
    help="MCP clients on this machine: point them at the gateway (each as an agent of its own), or back.",
    no_args_is_help=True,
)

ClientArg = Annotated[str, typer.Argument(help=f"One of: {', '.join(CLIENTS)}.")]


def _client(name: str) -> Client:
    client = CLIENTS.get(name)
    if client is None:
        fail(f"unknown client {name!r}; one of: {', '.join(CLIENTS)}")
    return client


@client_app.command("connect")
def client_connect(name: ClientArg) -> None:
    """Add the gateway to NAME's MCP configuration. The client starts `bosun gateway run --agent NAME` over
    stdio, so its file holds no credential, and policy and audit see it as the agent NAME (created if
    missing; give it groups with `bosun agent`). The client's other servers are kept, and the file as it
    was first is saved next to it as FILE.bosun-backup. Restart the client to pick it up."""
    client = _client(name)
    home = Home.default().ensure()
    agents = Agents.load(home.agents_file)
    if agents.get(name) is None:
        agents.add(name, [])  # its token is never used: the client reaches the gateway over stdio
        agents.save(home.agents_file)
        err_console.print(f"agent {name} created for {client.title}")
    launch = ([sys.executable, "-m", "bosun", "gateway", "run", "--agent", name], {"BOSUN_HOME": str(home.root)})
    try:
        path, backup = connect(client, Path.home(), launch)
    except (WiringError, OSError) as e:
        fail(str(e))
    console.print(f"connected {client.title}: {path}")
    if backup is not None:
        console.print(f"  the file as it was: {backup}")


@client_app.command("disconnect")
def client_disconnect(name: ClientArg) -> None:
    """Remove the gateway from NAME's MCP configuration (only Bosun's entry; the agent stays, see
    `bosun agent revoke`)."""
    client = _client(name)
    try:
        removed = disconnect(client, Path.home())
    except (WiringError, OSError) as e:
        fail(str(e))
    console.print(f"{'disconnected' if removed else 'was not connected:'} {client.title} ({client.path(Path.home())})")


@client_app.command("ls")
def client_ls(as_json: bool = JsonOpt) -> None:
    """Each known client, its configuration file, and whether it is wired to the gateway."""
    rows = [
        {"client": c.name, "title": c.title, "connected": "yes" if connected(c, Path.home()) else "no",
         "file": str(c.path(Path.home()))}
        for c in CLIENTS.values()
    ]  # fmt: skip
    table(rows, ["client", "title", "connected", "file"], as_json)
