"""Calls that policy says to ``ask`` about: a person decides, and nobody answering in time is a deny.

The person is the calling client's user, asked through MCP elicitation (``elicitation`` builds the
form, ``verdict`` reads the answer), when the client supports it and the policy allows; otherwise
the call waits for `bosun approve ID` or `bosun deny ID`.

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
import mcp.types as types

from bosun.files import write_atomic
from bosun.policy.engine import Decision
from bosun.policy.rules import Effect, Policy

log = logging.getLogger("bosun.policy")
POLL_S = 0.2


class AskError(ValueError):
    pass


def elicitation(agent: str, server: str, tool: str, arguments: Any, decision: Decision) -> types.ElicitRequest:
    """The form a client shows its user: who wants to call what, with which arguments, and why it asks."""
    shown = json.dumps(arguments, ensure_ascii=False, indent=1)
    shown = shown if len(shown) <= 2000 else shown[:2000] + " ..."
    why = f" ({decision.reason})" if decision.reason else ""
    message = (f"Bosun's policy asks a person before this call (rule {', '.join(decision.rules) or 'default'}{why}).\n"
               f"Agent {agent or 'operator'!r} wants to call {server}__{tool} with:\n{shown}")  # fmt: skip
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"approve": {"type": "boolean", "title": "Allow this call", "default": False}},
        "required": ["approve"],
    }
    return types.ElicitRequest(params=types.ElicitRequestFormParams(message=message, requested_schema=schema))


def verdict(answer: types.ElicitResult, decision: Decision) -> Decision:
    """Allow only an accepted form that says approve: anything else a client sends is a deny."""
    if answer.action == "accept" and (answer.content or {}).get("approve") is True:
        return Decision("allow", decision.rules, "approved by the client's user (elicitation)")
    what = {"accept": "did not approve", "decline": "declined", "cancel": "cancelled"}.get(answer.action, "refused")
    return Decision("deny", decision.rules, f"the client's user {what} the call (elicitation)")


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
