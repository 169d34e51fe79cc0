"""Waivers: a named person's decision to run one server despite one advisory, until a date."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from bosun.files import YamlFile


class Waiver(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    server: str
    reason: str = Field(min_length=3)
    until: date
    by: str
    created: datetime


class Waivers(YamlFile):
    model_config = ConfigDict(extra="forbid")

    waivers: list[Waiver] = Field(default_factory=list)

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
