"""Where Bosun keeps its state: everything lives under ``BOSUN_HOME`` (default ``~/.bosun``).

Nothing else on the host is written by Bosun; the layout below is the contract other parts use.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def default(cls) -> Home:
        env = os.environ.get("BOSUN_HOME")
        return cls(Path(env).expanduser() if env else Path.home() / ".bosun")

    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def lock_file(self) -> Path:
        return self.root / "lock.json"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def sources_file(self) -> Path:
        """Catalog sources added with `bosun catalog add`."""
        return self.root / "sources.yaml"

    @property
    def agents_file(self) -> Path:
        """Agents and the hashes of their tokens (`bosun agent add`)."""
        return self.root / "agents.yaml"

    @property
    def policy_file(self) -> Path:
        return self.root / "policy.yaml"

    @property
    def asks_dir(self) -> Path:
        """Calls waiting for `bosun approve` / `bosun deny`."""
        return self.root / "asks"

    @property
    def stdio_dir(self) -> Path:
        """Where server containers' stdio FIFOs are made; each is gone once both its ends are open."""
        return self.root / "run" / "stdio"

    @property
    def audit_db(self) -> Path:
        return self.root / "audit.db"

    @property
    def vuln_db(self) -> Path:
        return self.root / "vulns.db"

    @property
    def waivers_file(self) -> Path:
        return self.root / "waivers.yaml"

    @property
    def token_file(self) -> Path:
        return self.root / "gateway.token"

    @property
    def gateway_file(self) -> Path:
        """Written by a running HTTP gateway so the CLI can find it (URL and pid)."""
        return self.root / "gateway.json"

    def ensure(self) -> Home:
        for d in (self.root, self.cache_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    def gateway_token(self) -> tuple[str, bool]:
        """The HTTP gateway's bearer token, created on first use.

        Returns the token and whether it was created just now, so the caller can show it once.
        """
        self.ensure()
        if self.token_file.exists():
            return self.token_file.read_text().strip(), False
        token = secrets.token_urlsafe(32)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token, True
