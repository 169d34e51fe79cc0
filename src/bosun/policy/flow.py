"""Flow control: stopping the lethal trifecta (private data, untrusted content, a way out) at run time.

Labels on whole sessions are too coarse: real tasks read a bank statement (private, and written
partly by outsiders) and then pay a bill. So each session remembers where values came from: the
text of every tool result, with the call that produced it and that tool's labels. When a call to a
tool that can move data out (``external_send``) or do something consequential (``destructive``)
arrives, its arguments are checked:

- **untrusted destination**: a destination argument (a recipient, a URL's host, an account, a
  channel) that appears in untrusted content and in no trusted source trips. Trusted sources are
  the agent's known destinations, results of tools not labelled ``untrusted_content``, and
  destinations this session already used before untrusted text named them (the user's own).
- **private payload** (sends only): arguments carrying private values (an address, an account
  number, or a run of six words from a ``private_data`` result) to a destination that is not one of
  the agent's known destinations trip. A send with no destination argument goes to the tool itself,
  known as ``tool:server__tool``.
- **strict** mode adds: once a session has seen private data and untrusted content, every send trips.

Matching is on strings: a paraphrase of private text passes the payload check, which is why the
destination check does not depend on wording. Every trip names the values and the calls.
Hand-written: the research systems (CaMeL, FIDES) track values through an interpreter the
gateway does not have; what it has is the text going in and out, which is what this reads.
"""

from __future__ import annotations

import fnmatch
import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from bosun.policy.rules import Flow

PRIVATE, UNTRUSTED, SEND, DESTRUCTIVE = "private_data", "untrusted_content", "external_send", "destructive"
LABELS = frozenset({PRIVATE, UNTRUSTED, SEND, DESTRUCTIVE})

# Argument names that say where something goes, when the policy does not name them per tool.
_DESTINATION_KEY = re.compile(
    r"^(to|cc|bcc|recipients?|emails?|email_address|address(es)?|urls?|uri|links?|endpoint|webhook(_url)?|"
    r"host(name)?|domain|channels?(_id)?|accounts?(_number|_id)?|iban|payee|beneficiary|destination|dest|target|"
    r"phone(_number)?|number|repo(_url|sitory)?|remote)$",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s<>\"'`]+")
_HOST = re.compile(r"\b(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}\b")
# An IBAN, or nine or more digits with single spaces or dashes (accounts, cards, phones); not a date.
_ACCOUNT = re.compile(
    r"\b[a-z]{2}\d{2}(?:[ -]?[a-z0-9]{4}){2,8}(?:[ -]?[a-z0-9]{1,3})?\b"
    r"|(?<![\w.])(?!\d{4}-\d{2}-\d{2})\+?\d(?:[ -]?\d){8,}(?![\w.])"
)
_WORD = re.compile(r"\w+")
SHINGLE = 6  # words in a run of private text that counts as carried
TEXT_CAP = 64 * 1024  # characters kept of one result
SESSION_TEXT_CAP = 2 * 1024 * 1024  # characters kept per session, oldest results dropped first
SESSION_SHINGLE_CAP = 50_000
SESSIONS_CAP = 256  # sessions remembered; the least recently active is forgotten


def entities(text: str) -> set[str]:
    """Addresses, hosts and account numbers in casefolded ``text``, each tagged with its kind."""
    found = {f"email:{m}" for m in _EMAIL.findall(text)}
    found |= {f"host:{m.rstrip('.')}" for m in _HOST.findall(text)}
    found |= {f"account:{re.sub(r'[ +-]', '', m)}" for m in _ACCOUNT.findall(text)}
    return found


def _destination_values(value: str) -> set[str]:
    """What a destination argument names: the host of a URL, else its addresses and accounts, else itself."""
    text = value.strip().casefold()
    if _URL.fullmatch(text):
        host = urlsplit(text).hostname
        return {f"host:{host}"} if host else set()
    found = {e for e in entities(text) if not e.startswith("host:") or not _EMAIL.search(text)}
    return found or ({f"text:{text}"} if len(text) >= 3 else set())


def _shown(value: str) -> str:
    return value.partition(":")[2]


def _described(path: str, value: str) -> str:
    kind, _, bare = value.partition(":")
    return f"the host of {path}, {bare!r}," if kind == "host" else f"{path}={bare!r}"


def _shingles(tokens: list[str]) -> Iterator[tuple[int, int]]:
    for i in range(len(tokens) - SHINGLE + 1):
        yield hash(tuple(tokens[i : i + SHINGLE])), i


@dataclass
class Origin:
    """One earlier call whose result the session remembers."""

    call: int
    tool: str
    labels: frozenset[str]
    audit_seq: int = 0  # filled in once the call's audit record is chained

    def __str__(self) -> str:
        audit = f", audit #{self.audit_seq}" if self.audit_seq else ""
        return f"call {self.call} {self.tool}{audit}"


# A remembered result: (call, tool, labels, casefolded text), strings and numbers only. Sessions keep
# thousands, and every full pass of the garbage collector walks each object it tracks; it stops
# tracking a tuple of strings and numbers. With 30k calls kept, a full pass took 87 ms when each was
# three objects (call, result, a fresh set of labels) and 11 ms as these tuples.
_Kept = tuple[int, str, tuple[str, ...], str]


@dataclass
class SessionFlow:
    """What one session has seen; bounded, so a long session forgets its oldest results first."""

    calls: int = 0
    results: deque[_Kept] = field(default_factory=deque)
    size: int = 0
    # Of kept results, by call: audit records (0 until committed), and entities once a send asked for them
    # (as tuples: a frozenset each would be tracked again).
    audit_seqs: dict[int, int] = field(default_factory=dict)
    entities: dict[int, tuple[str, ...]] = field(default_factory=dict)
    private_shingles: OrderedDict[int, Origin] = field(default_factory=OrderedDict)
    private_entities: dict[str, Origin] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)  # destinations sent to before untrusted text named them
    first_private: Origin | None = None
    first_untrusted: Origin | None = None
    first_send: Origin | None = None  # the third leg: a finished call that can move data out

    def next_call(self, tool: str, labels: frozenset[str]) -> Origin:
        self.calls += 1
        return Origin(self.calls, tool, labels)

    def remember(self, origin: Origin, text: str) -> None:
        text = text[:TEXT_CAP].casefold()
        self.results.append((origin.call, origin.tool, tuple(sorted(origin.labels)), text))
        self.audit_seqs[origin.call] = 0
        self.size += len(text)
        while self.size > SESSION_TEXT_CAP and len(self.results) > 1:
            call, _, _, dropped = self.results.popleft()
            self.size -= len(dropped)
            self.audit_seqs.pop(call, None)
            self.entities.pop(call, None)
        if PRIVATE in origin.labels:
            self.first_private = self.first_private or origin
            for e in self._entities_of(self.results[-1]):
                self.private_entities.setdefault(e, origin)
            for h, _ in _shingles(_WORD.findall(text)):
                self.private_shingles[h] = origin
            while len(self.private_shingles) > SESSION_SHINGLE_CAP:
                self.private_shingles.popitem(last=False)
        if UNTRUSTED in origin.labels:
            self.first_untrusted = self.first_untrusted or origin
        if SEND in origin.labels:
            self.first_send = self.first_send or origin

    def committed(self, origin: Origin, audit_seq: int) -> None:
        """The call's audit record is chained: later refusals that name the call name the record too."""
        origin.audit_seq = audit_seq
        if origin.call in self.audit_seqs:
            self.audit_seqs[origin.call] = audit_seq

    def _entities_of(self, kept: _Kept) -> tuple[str, ...]:
        """Found when first asked for: only a send's destinations are looked up in earlier results, and
        most results are never looked in (the entity regexes were most of remembering a result)."""
        found = self.entities.get(kept[0])
        if found is None:
            found = self.entities[kept[0]] = tuple(entities(kept[3]))
        return found

    def sources(self, value: str) -> tuple[list[Origin], list[Origin]]:
        """The earlier results naming ``value``: (untrusted ones, trusted ones)."""
        kind, _, bare = value.partition(":")
        untrusted: list[Origin] = []
        trusted: list[Origin] = []
        for kept in self.results:
            if kind == "text":
                hit = bare in kept[3]
            elif kind == "host":
                # A host is named by any mention of it or of a domain it sits under: evil.com covers x.evil.com.
                parts = bare.split(".")
                found = self._entities_of(kept)
                hit = any(f"host:{'.'.join(parts[i:])}" in found for i in range(len(parts) - 1))
            else:
                hit = value in self._entities_of(kept)
            if hit:
                call, tool, labels, _ = kept
                origin = Origin(call, tool, frozenset(labels), self.audit_seqs.get(call, 0))
                (untrusted if UNTRUSTED in labels else trusted).append(origin)
        return untrusted, trusted


@dataclass(frozen=True)
class Trip:
    rule: str  # flow:untrusted-destination, flow:private-payload, flow:strict
    reason: str


class Sessions:
    """Every session's flow state, kept across policy reloads; the least recently active go first."""

    def __init__(self, cap: int = SESSIONS_CAP) -> None:
        self.cap = cap
        self._sessions: OrderedDict[str, SessionFlow] = OrderedDict()

    def items(self) -> list[tuple[str, SessionFlow]]:
        """Every session kept, most recently active first."""
        return list(reversed(self._sessions.items()))

    def get(self, session: str) -> SessionFlow:
        flow = self._sessions.pop(session, None) or SessionFlow()
        self._sessions[session] = flow
        while len(self._sessions) > self.cap:
            self._sessions.popitem(last=False)
        return flow


def _leaves(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, text) for every string in the arguments: ``message.to[0]``."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def _key(path: str) -> str:
    """The argument name a path ends in: ``to`` for ``message.to[0]``."""
    return re.sub(r"(\[\d+\])+$", "", path).rsplit(".", 1)[-1]


def _patterns(items: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(p.casefold()) for p in items) or r"(?!)")


class FlowRules:
    """The policy's ``flow`` section, compiled once per policy load."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self._labels = [(_patterns(t.tools), frozenset(t.labels)) for t in flow.labels]
        self._destinations = [(_patterns(d.tools), frozenset(d.args)) for d in flow.destinations]
        self._known = [(k, _patterns(k.values)) for k in flow.known_destinations]

    @property
    def enabled(self) -> bool:
        return self.flow.mode != "off"

    def labels(self, public: str, catalog_labels: Iterable[str]) -> frozenset[str]:
        """The tool's flow labels: the catalog's, replaced by the last policy entry naming the tool."""
        found = LABELS.intersection(catalog_labels)
        for pattern, labels in self._labels:
            if pattern.match(public.casefold()):
                found = labels
        return frozenset(found)

    def _is_known(self, value: str, agent: str, groups: frozenset[str]) -> bool:
        # Listed bare (an address, a host, an account), or with its kind for the ones only a kind tells apart.
        bare = _shown(value)
        return any(k.applies_to(agent, groups) and (p.match(bare) or p.match(value)) for k, p in self._known)

    def _destinations_of(self, public: str, args: dict[str, Any]) -> list[tuple[str, str]]:
        """(argument path, destination value) for each destination the call names."""
        out: list[tuple[str, str]] = []
        for path, text in _leaves(args):
            if self._is_destination(public, path):
                out.extend((path, v) for v in sorted(_destination_values(text)))
        return out

    def _is_destination(self, public: str, path: str) -> bool:
        named = next((a for p, a in self._destinations if p.match(public.casefold())), None)
        if named is not None:
            return re.sub(r"\[\d+\]", "", path) in named
        return bool(_DESTINATION_KEY.match(_key(path)))

    def check(
        self, flow: SessionFlow, agent: str, groups: Iterable[str], public: str, labels: frozenset[str],
        args: dict[str, Any] | None,
    ) -> Trip | None:  # fmt: skip
        """Whether this call would close a lethal trifecta; None lets it through."""
        if not self.enabled or not (labels & {SEND, DESTRUCTIVE}):
            return None
        groups = frozenset(groups)
        args = args or {}
        destinations = self._destinations_of(public, args)
        for path, value in destinations:
            if value in flow.used or self._is_known(value, agent, groups):
                continue
            untrusted, trusted = flow.sources(value)
            if untrusted and not trusted:
                return Trip(
                    "flow:untrusted-destination",
                    f"{_described(path, value)} comes from untrusted content ({'; '.join(map(str, untrusted[:3]))}) "
                    "and from no trusted source (a known destination, a trusted tool's result, or a destination "
                    "this session used before); if it is right, add it to flow.known_destinations",
                )
        if SEND not in labels:
            return None
        if self.flow.mode == "strict" and flow.first_private and flow.first_untrusted:
            return Trip(
                "flow:strict",
                f"this session read private data ({flow.first_private}) and untrusted content "
                f"({flow.first_untrusted}); strict flow mode allows no external send after both",
            )
        targets = [v for _, v in destinations] or [f"tool:{public.casefold()}"]
        unknown = [v for v in targets if not self._is_known(v, agent, groups)]
        if unknown:
            carried = self._private_in(flow, public, args, {v for _, v in destinations})
            if carried:
                shown = "; ".join(f"{text!r} from {origin}" for text, origin in carried[:3])
                return Trip(
                    "flow:private-payload",
                    f"the arguments carry private data ({shown}) to {_shown(unknown[0])!r}, which is not a known "
                    f"destination of agent {agent or 'operator'!r}; if it should be, add it to "
                    "flow.known_destinations",
                )
        return None

    def _private_in(
        self, flow: SessionFlow, public: str, args: dict[str, Any], destinations: set[str]
    ) -> list[tuple[str, Origin]]:
        """Private values the arguments carry: (the carried text, where it came from)."""
        carried: list[tuple[str, Origin]] = []
        if not flow.private_shingles and not flow.private_entities:
            return carried
        for path, raw in _leaves(args):
            # A destination is where the data goes, not data; only a URL can carry some along (its query).
            if self._is_destination(public, path) and not _URL.fullmatch(raw.strip().casefold()):
                continue
            text = unquote_plus(raw)
            for e in sorted(entities(text.casefold()) - destinations):
                if e in flow.private_entities and not e.startswith("host:"):  # a host is a place, not a secret
                    carried.append((_shown(e), flow.private_entities[e]))
            words = _WORD.findall(text)
            for h, i in _shingles([w.casefold() for w in words]):
                if h in flow.private_shingles:
                    carried.append((" ".join(words[i : i + SHINGLE]), flow.private_shingles[h]))
                    break
        return carried

    def after(self, flow: SessionFlow, origin: Origin, public: str, args: dict[str, Any] | None, text: str) -> None:
        """Remember what a finished call returned (``text``, see ``texts.text_of``), and which destinations it
        used while they were clean."""
        if not self.enabled:
            return
        if origin.labels & {SEND, DESTRUCTIVE}:
            for _, value in self._destinations_of(public, args or {}):
                if not flow.sources(value)[0]:
                    flow.used.add(value)
        flow.remember(origin, text)
