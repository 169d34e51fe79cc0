"""Running the real ``bosun`` command against a test home."""

from __future__ import annotations

import os
import subprocess
import sys

from bosun.home import Home


def bosun_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bosun", *args]


def env_for(home: Home) -> dict[str, str]:
    return {**os.environ, "BOSUN_HOME": str(home.root)}


def run_bosun(home: Home, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bosun_cmd(*args), env=env_for(home), capture_output=True, text=True, check=check, timeout=300)
