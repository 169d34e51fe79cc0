"""The lock file: which image id each catalog entry was built into, and from what."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from bosun.files import write_atomic


class LockedImage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: str
    image_id: str
    entry_digest: str
    recipe_digest: str = ""  # locks written before it existed rebuild once
    base_image_id: str
    built_at: datetime
    audit_score: int | None = None
    # What the server offered when first started after its build: kind -> digest (see catalog.pins)
    surface: dict[str, str] = {}


class Lock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    images: dict[str, LockedImage] = {}

    @classmethod
    def load(cls, path: Path) -> Lock:
        if not path.exists():
            return cls()
        return cls.model_validate_json(path.read_text())

    def save(self, path: Path) -> None:
        write_atomic(path, self.model_dump_json(indent=2))
