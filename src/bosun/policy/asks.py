"""Calls that policy says to ``ask`` about: each waits for a person's `bosun approve ID` or
`bosun deny ID`, and counts as denied when nobody answers in time.

A pending call is a file under ``BOSUN_HOME/asks`` holding what the person needs to judge it (the
agent, the tool, the arguments with stored secrets redacted); the answer is written into the same
file, which the waiting gateway polls. Files, not a socket, so the CLI needs no way into the
gateway process and an answer survives either side restarting.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from bosun.files import write_atomic
from bosun.policy.engine import Decision
from bosun.policy.rules import Effect, Policy

log = logging.getLogger("bosun.policy")
POLL_S = 0.2


class AskError(ValueError):
    pass


class Asks:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, ask_id: str) -> Path:
        if not ask_id.isalnum():
            raise AskError(f"{ask_id!r} is not an ask id")
        return self.root / f"{ask_id}.json"

    async def ask(
        self, agent: str, server: str, tool: str, arguments: dict[str, Any] | None, decision: Decision, policy: Policy
    ) -> Decision:
        """Wait for a person; allow or deny as they say, deny when the policy's timeout passes."""
        ask_id = secrets.token_hex(4)
        path = self._path(ask_id)
        timeout = policy.ask_timeout_seconds
        write_atomic(path, json.dumps({
            "id": ask_id, "agent": agent, "server": server, "tool": tool, "arguments": arguments or {},
            "rules": list(decision.rules), "reason": decision.reason,
            "asked_at": datetime.now(UTC).isoformat(timespec="seconds"), "timeout_seconds": timeout,
        }))  # fmt: skip
        log.warning("call %s__%s by %s waits for a person: `bosun approve %s` or `bosun deny %s` (%gs)",
                    server, tool, agent, ask_id, ask_id, timeout)  # fmt: skip
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                answer = json.loads(path.read_text()).get("answer")
                if answer:
                    effect: Effect = "allow" if answer["approve"] else "deny"
                    return Decision(effect, decision.rules, f"{'approved' if answer['approve'] else 'denied'} "
                                    f"by {answer['by']} (ask {ask_id})")  # fmt: skip
                await anyio.sleep(POLL_S)
            return Decision("deny", decision.rules, f"nobody approved within {timeout:g}s (ask {ask_id})")
        finally:
            path.unlink(missing_ok=True)

    def pending(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.root.glob("*.json")) if self.root.exists() else []:
            try:
                item = json.loads(p.read_text())
            except (OSError, ValueError):
                continue  # answered and removed while we read
            if "answer" not in item:
                out.append(item)
        return out

    def answer(self, ask_id: str, approve: bool, by: str) -> dict[str, Any]:
        path = self._path(ask_id)
        try:
            item: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            raise AskError(f"no call waits as {ask_id!r} (answered, timed out, or never asked); "
                           "see `bosun approve --list`") from None  # fmt: skip
        if "answer" in item:
            raise AskError(f"ask {ask_id} was already answered")
        item["answer"] = {"approve": approve, "by": by, "at": datetime.now(UTC).isoformat(timespec="seconds")}
        write_atomic(path, json.dumps(item))
        return item
