"""`bosun sandbox`: run a coding agent in a container that sees only its workspace and holds no real key."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import anyio
import typer
from docker.errors import APIError, NotFound

from bosun.audit.log import AuditLog
from bosun.cli.output import JsonOpt, console, err_console, fail, progress_printer, table
from bosun.gateway.agents import Agents
from bosun.home import Home
from bosun.images.base import SERVER_UID
from bosun.images.dockerbuild import ImageBuildError
from bosun.runtime import engine
from bosun.sandbox.image import ensure_image
from bosun.sandbox.kits import KITS
from bosun.sandbox.session import PROTECTED, Sandbox, credential_route, homes, run, session_user, spec_of
from bosun.secrets.store import SecretError, SecretStore

DEFAULT_GATEWAY_AGENT = "sandbox"
KIT_HELP = ", ".join(f"{k.name} ({k.description})" for k in KITS.values())

sandbox_app = typer.Typer(
    help="Agent sandboxes: a coding agent in a container that sees only its workspace.", no_args_is_help=True
)


def _gateway_agent(home: Home, name: str, chosen: bool) -> str:
    """The Bosun agent the sandbox's MCP calls are made as; the default one is made on first use."""
    agents = Agents.load(home.agents_file)
    known = agents.get(name)
    if known is not None and known.revoked is None:
        return name
    if known is not None or chosen:
        fail(f"no active agent named {name!r}; see `bosun agent ls`, or `bosun agent add {name}`")
    # Its token is never used: the sandbox is known by the socket mounted into it, not by a token it holds.
    agents.add(name, [DEFAULT_GATEWAY_AGENT])
    agents.save(home.agents_file)
    err_console.print(f"note: added agent {name!r} (group {DEFAULT_GATEWAY_AGENT!r}) for sandboxed agents' tool calls; "
                      "policy can name it")  # fmt: skip
    return name


@sandbox_app.command(
    "run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, no_args_is_help=False
)
def sandbox_run(
    ctx: typer.Context,
    agent: Annotated[str, typer.Option(help=f"The agent kit: {KIT_HELP}.")] = "shell",
    workspace: Annotated[
        Path, typer.Option(help="The folder the agent works in, mounted read-write at the same path.")
    ] = Path("."),
    protect: Annotated[bool, typer.Option(help=f"Mount {', '.join(PROTECTED)} read-only where they exist.")] = True,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="A host (or *.domain, host:port) the agent may reach, through Bosun's egress proxy only. "
            "Repeat. Default: the kit's API only (none for shell).",
        ),
    ] = None,
    api_url: Annotated[
        str | None, typer.Option(help="The kit's API elsewhere, e.g. your LLM gateway (https only).")
    ] = None,
    api_ca: Annotated[
        Path | None, typer.Option(help="A private CA (PEM) that --api-url's certificate chains to.")
    ] = None,
    gateway: Annotated[
        bool, typer.Option(help="Give the agent Bosun's governed tools (its MCP configuration names the gateway).")
    ] = True,
    gateway_agent: Annotated[
        str | None,
        typer.Option(
            help=f"The Bosun agent its tool calls are made as. Default: {DEFAULT_GATEWAY_AGENT!r}, made on first use."
        ),
    ] = None,
) -> None:
    """Run CMD (after --; default: the kit's agent) in a sandbox for WORKSPACE, as you would run it yourself.

    The container sees the workspace (read-write, same path) and a home of its own kept per workspace
    (`bosun sandbox ls|rm`), and nothing else of this machine: no other host files, no capabilities, a
    read-only system, the workspace owner's uid (never root), limits on memory, CPU and processes.

    Network: none, except through Bosun's egress proxy to the kit's API and the --allow-host hosts; its one
    network is internal, so unsetting the proxy variables, raw TCP and DNS go nowhere.

    Keys: the agent's key stays in Bosun's secret store (`bosun secret set anthropic-api-key`, or
    openai-api-key). The agent holds a sentinel; its base URL points at the proxy, which puts the real key on
    requests to its API only, over TLS.

    Tools: the gateway's socket is mounted in and the agent's MCP configuration names it, so its tool calls
    meet policy, flow control and audit as the agent --gateway-agent. Every session's start, end, egress
    decisions and key uses are in `bosun audit`.

    A terminal, signals, window size and the exit code work as with the command run directly.

    Examples:  bosun sandbox run --agent claude --workspace ~/src/app
               bosun sandbox run --workspace ~/src/app -- git status"""
    kit = KITS.get(agent)
    if kit is None:
        fail(f"unknown agent kit {agent!r}; choose one of: {KIT_HELP}")
    folder = workspace.expanduser().resolve()
    if not folder.is_dir():
        fail(f"{folder} is not a folder")
    if folder == Path("/") or folder == Path.home():
        fail(f"{folder} would hand the agent everything it holds; choose the project's folder")
    if kit.api is None and (api_url or api_ca):
        fail(f"the {kit.name} kit has no API for --api-url or --api-ca")
    argv = list(ctx.args) or list(kit.command)
    if session_user(folder).startswith(f"{SERVER_UID}:"):
        err_console.print(f"note: {folder} belongs to root; the agent runs as uid {SERVER_UID} and can write there "
                          "only where that uid may (give the folder to a user to work in it)")  # fmt: skip
    home = Home.default().ensure()
    api_key = None
    if kit.api is not None:
        try:
            api_key = SecretStore(home.root).get(kit.api.secret)
        except SecretError:
            fail(f"{kit.description}'s API key is not in Bosun's secret store: run `bosun secret set {kit.api.secret}` "
                 "(the agent will only ever see a sentinel)")  # fmt: skip
    chosen_agent = None
    if gateway:
        chosen_agent = _gateway_agent(home, gateway_agent or DEFAULT_GATEWAY_AGENT, gateway_agent is not None)
    sandbox = Sandbox(
        folder, kit, protect=protect, allow_hosts=tuple(allow_host or ()), api_url=api_url or "",
        api_ca=api_ca.read_text() if api_ca else "", gateway_agent=chosen_agent,
    )  # fmt: skip
    try:
        route = credential_route(sandbox)
    except ValueError as e:
        fail(f"--api-url: {e}")
    client = engine.client()
    audit = AuditLog(home.audit_db)
    try:
        image = ensure_image(client, home, kit, progress_printer("  ") if sys.stderr.isatty() else lambda _m: None)
        spec = spec_of(sandbox, image, argv)
        code = anyio.run(run, client, sandbox, spec, sys.stdin.isatty(), api_key, route, audit, home.log_dir)
    except (ImageBuildError, APIError) as e:
        fail(str(e))
    finally:
        audit.close()
    raise typer.Exit(code)


@sandbox_app.command("ls")
def sandbox_ls(as_json: bool = JsonOpt) -> None:
    """The sandboxes kept on this machine: each workspace and its home volume."""
    rows = [{"workspace": ws, "home volume": volume} for volume, ws in homes(engine.client())]
    table(rows, ["workspace", "home volume"], as_json)


@sandbox_app.command("rm")
def sandbox_rm(
    workspace: Annotated[Path | None, typer.Argument(help="The workspace whose sandbox home to delete.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every sandbox home.")] = False,
) -> None:
    """Delete a sandbox's home (what the agent kept between sessions; the workspace is not touched)."""
    client = engine.client()
    kept = homes(client)
    if all_:
        chosen = [volume for volume, _ in kept]
    elif workspace is not None:
        wanted = Sandbox(workspace.expanduser().resolve()).home_volume
        chosen = [volume for volume, _ in kept if volume == wanted]
    else:
        fail("name a workspace, or pass --all")
    if not chosen:
        err_console.print("no such sandbox")
        return
    for volume in chosen:
        try:
            client.volumes.get(volume).remove()
        except (NotFound, APIError) as e:
            fail(f"cannot remove {volume}: {e} (is a session still running?)")
        console.print(f"removed {volume}")
