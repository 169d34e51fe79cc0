"""Tool pins: the tools a server was approved with, so a silent change cannot reach an agent.

A server's tools are pinned the first time Bosun sees them (or when the user approves a change
with ``bosun catalog approve``). From then on, a tool whose name, description, schemas or
annotations differ from its pin, and any tool that was not there, is withheld until approved.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mcp.types as types
from pydantic import BaseModel, ConfigDict

from bosun.files import write_atomic

_PINNED_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")


def snapshot(tool: types.Tool) -> dict[str, Any]:
    """The parts of a tool that shape what an agent does with it, as plain JSON."""
    data = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {k: data[k] for k in _PINNED_FIELDS if k in data}


def tool_hash(tool: types.Tool) -> str:
    canonical = json.dumps(snapshot(tool), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def digest(items: list[Any]) -> str:
    """One hash over a server's tools, prompts or resources (order-free), for the lock file."""
    snaps = sorted(
        json.dumps(snapshot(i) if isinstance(i, types.Tool) else i.model_dump(mode="json", exclude_none=True),
                   sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        for i in items
    )  # fmt: skip
    return "sha256:" + hashlib.sha256("\n".join(snaps).encode()).hexdigest()


class Pins(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server: str
    pinned_at: datetime
    tools: dict[str, dict[str, Any]]  # name -> snapshot

    @classmethod
    def of(cls, server: str, tools: list[types.Tool]) -> Pins:
        return cls(server=server, pinned_at=datetime.now(UTC), tools={t.name: snapshot(t) for t in tools})

    def verdict(self, tool: types.Tool) -> str | None:
        """None when the tool matches its pin; otherwise why it is withheld."""
        pinned = self.tools.get(tool.name)
        if pinned is None:
            return "new since the server was approved"
        if pinned != snapshot(tool):
            return "changed since the server was approved"
        return None


def diff(old: Pins | None, tools: list[types.Tool]) -> str:
    """A unified diff of the pinned tools against ``tools``, for a person to review."""
    before = json.dumps(old.tools if old else {}, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    after = json.dumps({t.name: snapshot(t) for t in tools}, indent=2, sort_keys=True, ensure_ascii=False)
    return "\n".join(difflib.unified_diff(before, after.splitlines(), "pinned", "now", lineterm=""))


class PinStore:
    def __init__(self, root: Path) -> None:
        self.dir = root / "pins"

    def load(self, server: str) -> Pins | None:
        path = self.dir / f"{server}.json"
        return Pins.model_validate_json(path.read_text()) if path.exists() else None

    def save(self, pins: Pins) -> None:
        write_atomic(self.dir / f"{pins.server}.json", pins.model_dump_json(indent=2))
