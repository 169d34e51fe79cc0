"""`bosun sandbox`: run an agent (any CLI, for now) in a container that sees only its workspace."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import anyio
import typer
from docker.errors import APIError, NotFound

from bosun.cli.output import JsonOpt, console, err_console, fail, progress_printer, table
from bosun.home import Home
from bosun.images.base import SERVER_UID
from bosun.images.dockerbuild import ImageBuildError
from bosun.runtime import engine
from bosun.sandbox.image import ensure_image
from bosun.sandbox.session import PROTECTED, Sandbox, homes, run, session_user, spec_of

sandbox_app = typer.Typer(
    help="Agent sandboxes: a coding agent in a container that sees only its workspace.", no_args_is_help=True
)


@sandbox_app.command(
    "run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, no_args_is_help=False
)
def sandbox_run(
    ctx: typer.Context,
    agent: Annotated[str, typer.Option(help="The agent kit: shell (git, Python, Node, bash).")] = "shell",
    workspace: Annotated[
        Path, typer.Option(help="The folder the agent works in, mounted read-write at the same path.")
    ] = Path("."),
    protect: Annotated[bool, typer.Option(help=f"Mount {', '.join(PROTECTED)} read-only where they exist.")] = True,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="A host (or *.domain, host:port) the agent may reach, through Bosun's egress proxy only. "
            "Repeat. Default: no network at all.",
        ),
    ] = None,
) -> None:
    """Run CMD (after --; default: a shell) in a sandbox for WORKSPACE, as the developer would run it.

    The container sees the workspace (read-write, same path) and a home of its own kept per workspace
    (`bosun sandbox ls|rm`), and nothing else of this machine: no other host files, no capabilities, a
    read-only system, the workspace owner's uid (never root), limits on memory, CPU and processes. No
    network, unless --allow-host names hosts: then its one network is internal, and Bosun's egress proxy
    the only way out, to those hosts only (unsetting the proxy variables, raw TCP and DNS go nowhere).
    A terminal, signals, window size and the exit code work as with the command run directly.

    Example:  bosun sandbox run --workspace ~/src/app -- git status"""
    if agent != "shell":
        fail(f"unknown agent kit {agent!r}; this version has: shell (Claude Code and Codex kits come with egress)")
    folder = workspace.expanduser().resolve()
    if not folder.is_dir():
        fail(f"{folder} is not a folder")
    if folder == Path("/") or folder == Path.home():
        fail(f"{folder} would hand the agent everything it holds; choose the project's folder")
    argv = list(ctx.args) or ["bash"]
    if session_user(folder).startswith(f"{SERVER_UID}:"):
        err_console.print(f"note: {folder} belongs to root; the agent runs as uid {SERVER_UID} and can write there "
                          "only where that uid may (give the folder to a user to work in it)")  # fmt: skip
    home = Home.default().ensure()
    client = engine.client()
    sandbox = Sandbox(folder, agent, protect=protect, allow_hosts=tuple(allow_host or ()))
    try:
        image = ensure_image(client, home, agent, progress_printer("  ") if sys.stderr.isatty() else lambda _m: None)
        code = anyio.run(run, client, sandbox, spec_of(sandbox, image, argv), sys.stdin.isatty())
    except (ImageBuildError, APIError) as e:
        fail(str(e))
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
