"""Replacing secrets with a marker, in tool arguments and results and in server logs.

Two kinds are found: every value in Bosun's secret store (marked with its name) and well-known
credential formats nobody stored here (marked with the format: provider API keys, private keys,
JWTs, Bosun's own agent tokens). One regex pass finds both.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import pydantic_core
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

# Shorter values would turn ordinary words into markers; such a value is a weak secret anyway.
MIN_LENGTH = 4

# Published token formats; each is specific enough that a match is a credential, not prose.
FORMATS: dict[str, str] = {
    "private-key": r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    "aws-access-key-id": r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
    "github-token": r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b|\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
    "gitlab-token": r"\bglpat-[A-Za-z0-9_-]{20,}",
    "anthropic-api-key": r"\bsk-ant-[A-Za-z0-9_-]{20,}",
    "openai-api-key": r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
    "slack-token": r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    "stripe-key": r"\b(?:rk|sk)_(?:live|test)_[A-Za-z0-9]{16,}",
    "google-api-key": r"\bAIza[0-9A-Za-z_-]{35}",
    "jwt": r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",
    "bosun-agent-token": r"\bbsn_[A-Za-z0-9_-]{43}",
}


class Redactor:
    def __init__(self, secrets: dict[str, str], formats: bool = True) -> None:
        usable = {v: n for n, v in secrets.items() if len(v) >= MIN_LENGTH}
        # Stored values first, longest first: a stored token is named by its name, not its format, and a
        # secret that contains another is replaced whole. One regex per kind, not one alternation: each
        # keeps the engine's scan for its literal prefix, which an alternation of them loses (about 50x).
        alternatives = "|".join(map(re.escape, sorted(usable, key=len, reverse=True)))
        self._kinds: list[tuple[re.Pattern[str], str | None]] = [(re.compile(alternatives), None)] if usable else []
        self._kinds += [(re.compile(regex), name) for name, regex in FORMATS.items()] if formats else []
        self._names = usable
        # A model's JSON can stand in for its strings when stored values are also sought JSON-escaped (a PEM
        # key's newlines are \n there) and the formats lose their word boundaries (an escape such as \n
        # puts a letter before a token).
        escaped = {json.dumps(v, ensure_ascii=False)[1:-1] for v in usable} | set(usable)
        stored = [re.compile("|".join(map(re.escape, sorted(escaped, key=len, reverse=True))))] if usable else []
        formats_ = [re.compile(p.pattern.replace(r"\b", "")) for p, name in self._kinds if name is not None]
        self._prefilter = stored + formats_

    def text(self, value: str) -> tuple[str, set[str]]:
        """The text with each secret replaced by ``[REDACTED:name]``, and the names found."""
        hits: set[str] = set()
        for pattern, kind in self._kinds:

            def mark(m: re.Match[str], kind: str | None = kind) -> str:
                name = kind or self._names[m.group(0)]
                hits.add(name)
                return f"[REDACTED:{name}]"

            value = pattern.sub(mark, value)
        return value, hits

    def value(self, value: Any) -> tuple[Any, set[str]]:
        """A JSON-like value (arguments) with every string inside redacted, and the names found."""
        hits: set[str] = set()

        def walk(v: Any) -> Any:
            if isinstance(v, str):
                out, found = self.text(v)
                hits.update(found)
                return out
            if isinstance(v, dict):
                return {k: walk(x) for k, x in v.items()}
            if isinstance(v, list):
                return [walk(x) for x in v]
            return v

        if not self._clean(pydantic_core.to_json(value).decode()):
            value = walk(value)
        return value, hits

    def _clean(self, dumped: str) -> bool:
        """Whether JSON text surely holds no secret."""
        return not any(p.search(dumped) for p in self._prefilter)

    def model(self, model: M) -> tuple[M, set[str]]:
        """A copy of ``model`` with every string inside it redacted; the same object when clean."""
        # The common case is clean: a search of the serialised model instead of a walk of its tree.
        if not self._kinds or self._clean(model.model_dump_json(by_alias=True)):
            return model, set()
        cleaned, hits = self.value(model.model_dump(by_alias=True, mode="json"))
        if not hits:
            return model, hits
        return type(model).model_validate(cleaned), hits
