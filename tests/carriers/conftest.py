"""Carrier tests: both carrier emulators on loopback, and clean process-wide breaker state per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from carrier_helpers import Carriers

from voicerouter import resilience
from voicerouter.testing.server import emulate


@pytest.fixture(autouse=True)
def _clean_resilience_state():
    resilience.reset()
    yield
    resilience.reset()


@pytest.fixture
async def carriers() -> AsyncIterator[Carriers]:
    async with emulate("twilio") as twilio, emulate("telnyx") as telnyx:
        yield Carriers(twilio, telnyx)
