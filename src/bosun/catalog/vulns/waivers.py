"""Waivers: a named person's decision to run one server despite one advisory, until a date."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bosun.files import write_atomic


class Waiver(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    server: str
    reason: str = Field(min_length=3)
    until: date
    by: str
    created: datetime


class Waivers(BaseModel):
    model_config = ConfigDict(extra="forbid")

    waivers: list[Waiver] = []

    @classmethod
    def load(cls, path: Path) -> Waivers:
        if not path.exists():
            return cls()
        try:
            return cls.model_validate(yaml.safe_load(path.read_text()) or {})
        except (yaml.YAMLError, ValidationError) as e:
            raise ValueError(f"{path}: {e}") from None

    def save(self, path: Path) -> None:
        write_atomic(path, yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    def add(self, waiver: Waiver) -> None:
        # One waiver per advisory and server: a new one replaces the old (e.g. to extend it).
        self.waivers = [w for w in self.waivers if (w.id, w.server) != (waiver.id, waiver.server)] + [waiver]

    def remove(self, advisory: str, server: str) -> bool:
        before = len(self.waivers)
        self.waivers = [w for w in self.waivers if (w.id, w.server) != (advisory, server)]
        return len(self.waivers) != before

    def active_for(self, server: str, ids: Iterable[str], today: date) -> Waiver | None:
        wanted = set(ids)
        return next((w for w in self.waivers if w.server == server and w.id in wanted and w.until >= today), None)
