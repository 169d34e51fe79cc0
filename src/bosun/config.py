"""The user's settings in ``BOSUN_HOME/config.yaml``: which servers are enabled, with which grants."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bosun.catalog.models import Entry


class ConfigError(ValueError):
    pass


class MountGrant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Path
    target: str
    read_only: bool = True

    @classmethod
    def parse(cls, text: str) -> MountGrant:
        """``HOST:CONTAINER[:rw|:ro]``; read-only unless ``:rw``; the host path must exist."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
            raise ConfigError(f"mount {text!r} must look like HOST_PATH:/container/path[:rw]")
        if len(parts) == 3 and parts[2] not in ("rw", "ro"):
            raise ConfigError(f"mount {text!r}: the mode must be rw or ro, not {parts[2]!r}")
        source = Path(parts[0]).expanduser().resolve()
        if not source.exists():
            raise ConfigError(f"mount {text!r}: host path {source} does not exist")
        return cls(source=source, target=parts[1], read_only=not (len(parts) == 3 and parts[2] == "rw"))


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    mounts: list[MountGrant] = []


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    servers: dict[str, ServerSettings] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Settings:
        if not path.exists():
            return cls()
        try:
            return cls.model_validate(yaml.safe_load(path.read_text()) or {})
        except (yaml.YAMLError, ValidationError) as e:
            raise ConfigError(f"{path}: {e}") from None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(self.model_dump(mode="json"), f, sort_keys=True)
        os.replace(tmp, path)

    def enabled(self) -> list[str]:
        return sorted(name for name, s in self.servers.items() if s.enabled)

    def enable(self, entry: Entry, mounts: list[MountGrant]) -> None:
        targets = {m.target for m in entry.mounts}
        for m in mounts:
            if m.target not in targets:
                asked = ", ".join(sorted(targets)) or "none"
                raise ConfigError(f"{entry.name} does not ask for a mount at {m.target} (it asks for: {asked})")
        current = self.servers.get(entry.name, ServerSettings())
        self.servers[entry.name] = ServerSettings(enabled=True, mounts=mounts or current.mounts)
