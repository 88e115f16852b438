"""Session tests share process-wide resilience state (breakers, health, capacity counts): each starts clean,
so one test's failures never trip the next."""

from __future__ import annotations

import pytest

from voicerouter import resilience


@pytest.fixture(autouse=True)
def _clean_resilience_state():
    resilience.reset()
    yield
    resilience.reset()
