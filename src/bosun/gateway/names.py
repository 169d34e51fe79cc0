"""Names clients see: ``<server>__<tool>``, inside MCP's tool-name rules, never colliding.

Server names cannot contain ``__`` (the catalog forbids it), so splitting at the first ``__``
is unambiguous even when a tool's own name contains the separator.
"""

from __future__ import annotations

import hashlib
import re

SEPARATOR = "__"
MAX_NAME = 128  # MCP (SEP-986): 1-128 characters of [A-Za-z0-9_.-]
_INVALID = re.compile(r"[^A-Za-z0-9_.-]")


def namespaced(server: str, name: str) -> str:
    """The client-facing name; stable for the same input, so pins and policies can refer to it."""
    safe = _INVALID.sub("_", name)
    full = f"{server}{SEPARATOR}{safe}"
    if safe != name or len(full) > MAX_NAME:
        # A rewritten name could collide with a real one; a short hash of the original prevents it.
        suffix = "_" + hashlib.sha256(name.encode()).hexdigest()[:8]
        full = full[: MAX_NAME - len(suffix)] + suffix
    return full


def split(name: str) -> tuple[str, str]:
    """``(server, namespaced-remainder)``; raises ``ValueError`` for a name without a server prefix."""
    server, sep, rest = name.partition(SEPARATOR)
    if not sep or not server or not rest:
        raise ValueError(f"{name!r} is not a gateway tool name (expected <server>{SEPARATOR}<tool>)")
    return server, rest


class Naming:
    """Names as clients see them: ``server__name`` on a gateway of many servers, the server's own names on
    a gateway of one (``--server``), where a client written for that server works unchanged."""

    def __init__(self, only: str | None) -> None:
        self.prefix = f"{only}{SEPARATOR}" if only else ""

    def public(self, name: str) -> str:
        return self.prefix + name

    def shown(self, public: str) -> str:
        return public.removeprefix(self.prefix)
