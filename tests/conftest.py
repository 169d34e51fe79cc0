from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # The Docker backend drives the engine's attach socket with asyncio streams.
    return "asyncio"
