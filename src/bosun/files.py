"""Writing state files so that a crash mid-write never leaves one that does not parse."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Self

import yaml
from pydantic import BaseModel, ValidationError


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step. The file is 0600: all of Bosun's state is private."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class YamlFile(BaseModel):
    """A state file that is one pydantic model in YAML: absent means the model's defaults."""

    @classmethod
    def invalid(cls, path: Path, problem: str) -> Exception:
        """The error a malformed file raises; subclasses name their own kind."""
        return ValueError(f"{path}: {problem}")

    @classmethod
    def load(cls, path: Path) -> Self:
        if not path.exists():
            return cls()
        try:
            return cls.model_validate(yaml.safe_load(path.read_text()) or {})
        except (yaml.YAMLError, ValidationError) as e:
            raise cls.invalid(path, str(e)) from None

    def save(self, path: Path) -> None:
        write_atomic(path, yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))
