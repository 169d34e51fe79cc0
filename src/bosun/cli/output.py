"""Shared CLI output: tables for people, ``--json`` for scripts, errors that say what to do."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

# Piped output is for scripts and logs: never cut a table to an 80-column guess.
console = Console(width=None if sys.stdout.isatty() else 250)
err_console = Console(stderr=True)

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def progress_printer(prefix: str = "") -> Callable[[str], None]:
    def show(line: str) -> None:
        err_console.print(f"{prefix}{line}", style="dim", highlight=False, markup=False, soft_wrap=True)

    return show


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], as_json: bool, title: str | None = None) -> None:
    if as_json:
        print(json.dumps(list(rows), indent=2, default=str))
        return
    t = Table(title=title, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*(str(r.get(c, "")) for c in columns))
    console.print(t)
