"""Finding tool-poisoning in tool descriptions: text written for the model, not for the user.

Each finding names the tool, where in it the text sits, the rule, and the exact span, so a
reviewer sees what triggered it instead of a bare verdict.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import mcp.types as types

# Text addressed to the model rather than the user: shared with the screening of tool results.
INSTRUCTION_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("hidden instructions", re.compile(r"<\s*/?\s*(important|system|instructions?|secret)\s*>", re.IGNORECASE)),
    (
        "hidden instructions",
        re.compile(
            r"\b(ignore|disregard|forget)\s+(all\s+|any\s+)?(the\s+)?(previous|prior|above|earlier)\s+"
            r"(instructions|rules|messages)",
            re.IGNORECASE,
        ),
    ),
    (
        "hidden instructions",
        re.compile(r"\bdo\s+not\s+(tell|mention|inform|reveal\s+to|show)\s+(this\s+to\s+)?the\s+user", re.IGNORECASE),
    ),
    (
        "invisible or bidi characters",
        re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f]+"),
    ),
]
_RULES: list[tuple[str, re.Pattern[str]]] = [
    *INSTRUCTION_RULES,
    ("exfiltration URL", re.compile(r"\bhttps?://[^\s)\"'>]+", re.IGNORECASE)),
    (
        "sensitive files",
        re.compile(r"(~|\$HOME)/\.(ssh|aws|config|netrc|npmrc|docker)\b|\bid_(rsa|ed25519)\b|\.env\b"),
    ),
]


# A bare URL is common in honest descriptions; alone it only warns, except for low-trust sources.
WEAK_RULES = frozenset({"exfiltration URL"})


@dataclass(frozen=True)
class Finding:
    tool: str
    where: str  # "description" or "inputSchema.properties.x.description"
    rule: str
    span: str
    start: int


def _texts(tool: types.Tool) -> Iterator[tuple[str, str]]:
    if tool.description:
        yield "description", tool.description
    if tool.title:
        yield "title", tool.title

    def walk(node: Any, path: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("description", "title") and isinstance(v, str):
                    yield f"{path}.{k}", v
                else:
                    yield from walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{path}[{i}]")

    yield from walk(tool.input_schema, "inputSchema")


def scan(tool: types.Tool, other_servers: set[str]) -> list[Finding]:
    """Findings in one tool; ``other_servers`` are names whose tools this one must not talk about."""
    shadowing = (
        re.compile(r"\b(" + "|".join(map(re.escape, sorted(other_servers))) + r")(__\w+|\s+(server|tool)s?)\b", re.I)
        if other_servers
        else None
    )
    found = []
    for where, text in _texts(tool):
        rules = [*_RULES, ("shadowing another server", shadowing)] if shadowing else _RULES
        for rule, pattern in rules:
            for m in pattern.finditer(text):
                found.append(Finding(tool.name, where, rule, m.group(0).encode("unicode_escape").decode(), m.start()))
    return found
