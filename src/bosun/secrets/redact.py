"""Replacing every stored secret value with a marker, in tool results and in server logs."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

# Shorter values would turn ordinary words into markers; such a value is a weak secret anyway.
MIN_LENGTH = 4


class Redactor:
    def __init__(self, secrets: dict[str, str]) -> None:
        usable = {v: n for n, v in secrets.items() if len(v) >= MIN_LENGTH}
        self._names = usable
        # Longest first, so a secret that contains another is replaced whole.
        alternatives = sorted(usable, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None

    def text(self, value: str) -> tuple[str, set[str]]:
        """The text with each secret replaced by ``[REDACTED:name]``, and the names found."""
        if self._pattern is None:
            return value, set()
        hits: set[str] = set()

        def mark(m: re.Match[str]) -> str:
            name = self._names[m.group(0)]
            hits.add(name)
            return f"[REDACTED:{name}]"

        return self._pattern.sub(mark, value), hits

    def model(self, model: M) -> tuple[M, set[str]]:
        """A copy of ``model`` with every string inside it redacted; the same object when clean."""
        if self._pattern is None:
            return model, set()
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

        cleaned = walk(model.model_dump(by_alias=True, mode="json"))
        if not hits:
            return model, hits
        return type(model).model_validate(cleaned), hits
