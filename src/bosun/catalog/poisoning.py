"""Finding tool-poisoning in tool descriptions: text written for the model, not for the user.

Each finding names the tool, where in it the text sits, the rule, and the exact span, so a
reviewer sees what triggered it instead of a bare verdict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import mcp.types as types


class Rule(NamedTuple):
    """A pattern that flags text, with the lower-case words of which every match, lower-cased, holds at
    least one. A substring test of an ASCII text for a rule's words is much cheaper than the rule's
    regex (most rules ignore case, and a case-blind scan has no literal to search for), and a text
    without them cannot match. ``None``: no such words, the regex always runs."""

    name: str
    pattern: re.Pattern[str]
    words: tuple[str, ...] | None = None


def matches(rules: Iterable[Rule], text: str) -> Iterator[tuple[Rule, re.Match[str]]]:
    """Every match of every rule in ``text``, rule by rule."""
    # Only ASCII text is pre-filtered: a case-blind regex also matches some other letters with ASCII
    # ones (dotless i, long s), which lower() does not turn into the ASCII letter.
    low = text.lower() if text.isascii() else None
    for rule in rules:
        if low is not None and rule.words is not None and not any(map(low.__contains__, rule.words)):
            continue
        for m in rule.pattern.finditer(text):
            yield rule, m


class RuleSet:
    """Rules always run together (a policy's screening), with every rule's words gathered once, so that an
    ASCII text holding none of them, the common case, is passed in one loop instead of a test per rule."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        words = None if any(r.words is None for r in self.rules) else {w for r in self.rules for w in r.words or ()}
        # None: some rule has no words, so no text is passed unread. A word holding another adds nothing.
        self._words = None if words is None else [w for w in sorted(words) if not any(o != w and o in w for o in words)]

    def clear(self, text: str) -> bool:
        """Whether no rule can match ``text`` (an ASCII text without any rule's words; see ``Rule``)."""
        if self._words is None or not text.isascii():
            return False
        low = text.lower()
        for word in self._words:  # noqa: SIM110  # any() over a generator is a third slower, on every result
            if word in low:
                return False
        return True

    def matches(self, text: str) -> Iterator[tuple[Rule, re.Match[str]]]:
        """``matches`` of these rules, with nothing read past ``clear``."""
        return iter(()) if self.clear(text) else matches(self.rules, text)


# Text addressed to the model rather than the user: shared with the screening of tool results.
INSTRUCTION_RULES: list[Rule] = [
    Rule(
        "hidden instructions",
        re.compile(r"<\s*/?\s*(important|system|instructions?|secret)\s*>", re.IGNORECASE),
        ("important", "system", "instruction", "secret"),
    ),
    Rule(
        "hidden instructions",
        re.compile(
            r"\b(ignore|disregard|forget)\s+(all\s+|any\s+)?(the\s+)?(previous|prior|above|earlier)\s+"
            r"(instructions|rules|messages)",
            re.IGNORECASE,
        ),
        ("ignore", "disregard", "forget"),
    ),
    Rule(
        "hidden instructions",
        re.compile(r"\bdo\s+not\s+(tell|mention|inform|reveal\s+to|show)\s+(this\s+to\s+)?the\s+user", re.IGNORECASE),
        ("user",),
    ),
    # Every character it names is outside ASCII.
    Rule(
        "invisible or bidi characters",
        re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f]+"),
        (),
    ),
]
_RULES: list[Rule] = [
    *INSTRUCTION_RULES,
    Rule("exfiltration URL", re.compile(r"\bhttps?://[^\s)\"'>]+", re.IGNORECASE), ("http",)),
    Rule(
        "sensitive files",
        re.compile(r"(~|\$HOME)/\.(ssh|aws|config|netrc|npmrc|docker)\b|\bid_(rsa|ed25519)\b|\.env\b"),
        ("/.", "id_", ".env"),
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
        rules = [*_RULES, Rule("shadowing another server", shadowing)] if shadowing else _RULES
        for rule, m in matches(rules, text):
            found.append(Finding(tool.name, where, rule.name, m.group(0).encode("unicode_escape").decode(), m.start()))
    return found
