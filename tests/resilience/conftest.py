"""Resilience tests share process-wide state (breakers, health, counts): start each test clean."""

from __future__ import annotations

import pytest

from voicerouter import resilience
from voicerouter.resilience import health


@pytest.fixture(autouse=True)
async def _clean_resilience_state():
    resilience.reset()
    yield
    await health.stop_all()
    resilience.reset()
