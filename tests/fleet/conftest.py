"""Fixtures of the fleet tests: a real redis-server per test (see redis_helpers)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from redis_helpers import redis_server  # noqa: E402,F401
