"""Process-wide state of each provider instance, shared by every session: breaker, health, latency, load.

Keyed by instance name plus a digest of its config, so two tables that reuse a name for a
different endpoint do not share a breaker. `reset()` clears everything (tests, benchmarks).
"""

from __future__ import annotations

import hashlib
import json
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voicerouter.config.schema import BreakerConfig
from voicerouter.resilience.breaker import CircuitBreaker

if TYPE_CHECKING:
    from voicerouter.session.events import EventBus

EWMA_ALPHA = 0.3
RECENT = 20  # first-result latencies kept per provider for percentiles (outliers, adaptive hedging)


def config_identity(config: Any) -> str:
    if config is None:
        return "-"
    data = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def instance_key(name: str, config: Any = None) -> str:
    return f"{name}#{config_identity(config)}"


@dataclass
class ProviderState:
    name: str
    key: str
    breaker: CircuitBreaker
    healthy: bool = True
    unhealthy_since: float = 0.0
    last_error: str | None = None
    latency_s: float | None = None  # EWMA of time to first result
    active_sessions: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))  # first-result latencies, s
    calls: int = 0  # calls started as the preferred provider (the hedge budget's denominator)
    hedges: int = 0  # of those, raced by a hedge
    demoted_until: float = 0.0  # time.monotonic(): a latency outlier tried after the next provider
    demotions: int = 0  # in a row (each demotion lasts longer)
    in_flight: int = 0  # calls waiting for their first result (a local engine's queue)
    limited_until: float = 0.0  # time.monotonic() until which a 429's Retry-After asks us to stay away
    limit: int | None = None
    # seconds of audio per character of its S2S replies (where word ends fall; see resilience.resume)
    seconds_per_char: float | None = None
    # buses of live sessions using this provider: a background probe reports to all of them
    buses: weakref.WeakSet[EventBus] = field(default_factory=weakref.WeakSet)

    def observe_latency(self, seconds: float) -> None:
        self.latency_s = seconds if self.latency_s is None else EWMA_ALPHA * seconds + (1 - EWMA_ALPHA) * self.latency_s
        self.recent.append(seconds)

    def percentile(self, q: float) -> float | None:
        """The q-quantile (0..1) of the recent first-result latencies, or None without any."""
        if not self.recent:
            return None
        ordered = sorted(self.recent)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def mark_unhealthy(self, error: str) -> bool:
        """Returns True when this changed the state."""
        changed = self.healthy
        self.healthy = False
        self.unhealthy_since = time.monotonic()
        self.last_error = error
        return changed

    def mark_healthy(self) -> bool:
        changed = not self.healthy
        self.healthy = True
        self.last_error = None
        return changed

    def rate_limited_for(self) -> float:
        """Seconds left of the last Retry-After (0 when none is pending)."""
        return max(0.0, self.limited_until - time.monotonic())

    def has_room(self) -> bool:
        return self.limit is None or self.active_sessions < self.limit


_STATES: dict[str, ProviderState] = {}
# Called with each new ProviderState (a fleet's shared state attaches its breaker hooks here).
STATE_HOOKS: list[Callable[[ProviderState], None]] = []
_ROUTES: dict[str, int] = {}  # route -> active sessions
_ROUND_ROBIN: dict[str, int] = {}


def provider_state(name: str, config: Any = None, breaker: BreakerConfig | None = None) -> ProviderState:
    key = instance_key(name, config)
    state = _STATES.get(key)
    if state is None:
        state = ProviderState(name, key, CircuitBreaker(breaker or BreakerConfig()))
        _STATES[key] = state
        for hook in STATE_HOOKS:
            hook(state)
    elif breaker is not None and state.breaker.config != breaker:
        state.breaker.config = breaker  # the newest table's thresholds win; the state is kept
    if config is not None and getattr(config, "max_concurrent_sessions", None):
        state.limit = config.max_concurrent_sessions
    return state


def states() -> list[ProviderState]:
    """Every provider instance this process has state for."""
    return list(_STATES.values())


def find_state(key: str) -> ProviderState | None:
    return _STATES.get(key)


def route_counts() -> dict[str, int]:
    return _ROUTES


def next_round_robin(key: str) -> int:
    value = _ROUND_ROBIN.get(key, 0)
    _ROUND_ROBIN[key] = value + 1
    return value


def snapshot() -> dict[str, dict[str, Any]]:
    """What this process knows about each provider instance, by instance name (for status views)."""
    out: dict[str, dict[str, Any]] = {}
    for state in _STATES.values():
        out[state.name] = {
            "breaker": state.breaker.state,
            "consecutive_failures": state.breaker.consecutive,
            "healthy": state.healthy,
            "last_error": state.last_error,
            "latency_ms": None if state.latency_s is None else round(state.latency_s * 1000, 1),
            "rate_limited_s": round(state.rate_limited_for(), 3),
            "active_sessions": state.active_sessions,
            "max_sessions": state.limit,
        }
    return out


def reset() -> None:
    """Forget every breaker, health mark, latency figure and session count in this process."""
    _STATES.clear()
    _ROUTES.clear()
    _ROUND_ROBIN.clear()
