"""A circuit breaker per provider instance, so a failing provider is skipped by every session at once.

closed -> open after `failures` consecutive failures (or a failure rate over the last `window`
calls, counted once `failures` calls are in the window); open -> half_open after `cooldown_s`,
which lets exactly one probe request through; the probe's success closes it, its failure reopens it.

Only the probe decides: the outcome of a request admitted before the breaker last opened (it was
already in flight) never closes or reopens it, so a slow success from the closed period cannot
flap the breaker shut. Callers pass `started_at` (the breaker's clock when the request was admitted,
`breaker.now()`) to `record_success`/`record_failure`; a success means the call completed (a
stream that breaks after its first chunk is a failure).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from voicerouter.config.schema import BreakerConfig

State = Literal["closed", "open", "half_open"]
Listener = Callable[[State, State, str], None]  # (state, previous, reason)
ProbeGate = Callable[[], bool]


class CircuitBreaker:
    def __init__(self, config: BreakerConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self.state: State = "closed"
        self.consecutive = 0
        self._window: deque[bool] = deque(maxlen=config.window)  # True = failure
        self._opened_at = 0.0
        self._half_open_at = 0.0
        self._probe_out = False
        # A fleet's shared state (voicerouter.fleet) hears every transition and may hold back the
        # half-open probe until this process holds the fleet's one probe permit.
        self.on_change: Listener | None = None
        self.probe_gate: ProbeGate | None = None

    def now(self) -> float:
        """The breaker's clock: pass its value at admission to `record_success`/`record_failure`."""
        return self._clock()

    def _move(self, state: State, reason: str, listener: Listener | None) -> None:
        previous, self.state = self.state, state
        if state == "open":
            self._opened_at = self._clock()
        elif state == "half_open":
            self._half_open_at = self._clock()
        if state != "half_open":
            self._probe_out = False
        if previous != state:
            if listener is not None:
                listener(state, previous, reason)
            if self.on_change is not None:
                self.on_change(state, previous, reason)

    def cooled(self) -> bool:
        return self._clock() - self._opened_at >= self.config.cooldown_s

    def allow(self, listener: Listener | None = None) -> bool:
        """May a request go to this provider now? In half_open only one caller gets True (the probe)."""
        if self.state == "open":
            if not self.cooled() or (self.probe_gate is not None and not self.probe_gate()):
                return False
            self._move("half_open", "cooldown elapsed", listener)
        if self.state == "half_open":
            if self._probe_out:
                return False
            self._probe_out = True
        return True

    def release_probe(self) -> None:
        """The probe was abandoned (cancelled, not failed): let the next caller probe."""
        self._probe_out = False

    def abandon(self, started_at: float | None) -> None:
        """A request its caller gave up on (barge-in, a hedge's loser): neither success nor failure,
        but if it was the half-open probe, the next caller may probe."""
        if self.state == "half_open" and not self._stale(started_at):
            self._probe_out = False

    def _stale(self, started_at: float | None) -> bool:
        """Was this request admitted before the breaker left closed? (Then it is not the probe.)"""
        return self.state != "closed" and started_at is not None and started_at < self._half_open_at

    def record_success(self, listener: Listener | None = None, *, started_at: float | None = None) -> None:
        if self._stale(started_at) or self.state == "open":
            return  # in flight before the breaker opened: only the half-open probe may close it
        self.consecutive = 0
        self._window.append(False)
        if self.state == "half_open":
            self._window.clear()
            self._move("closed", "probe succeeded", listener)

    def record_failure(self, reason: str, listener: Listener | None = None, *, started_at: float | None = None) -> None:
        if self._stale(started_at):
            return  # the breaker already knows; a late failure is not the probe's
        self.consecutive += 1
        self._window.append(True)
        if self.state == "half_open":
            self._move("open", f"probe failed: {reason}", listener)
        elif self.state == "closed" and self._should_open():
            self._move("open", reason, listener)

    def trip(self, reason: str, listener: Listener | None = None) -> None:
        """Open at once (a permanent error: retrying cannot help until something changes)."""
        self._window.append(True)
        self.consecutive += 1
        if self.state != "open":
            self._move("open", reason, listener)
        else:
            self._opened_at = self._clock()

    def half_open(self, reason: str, listener: Listener | None = None) -> None:
        """A health probe succeeded: skip the rest of the cooldown and let one real request decide."""
        if self.state == "open":
            self._move("half_open", reason, listener)

    def sync_open(self, reason: str, remaining_s: float, listener: Listener | None = None) -> None:
        """Another process opened this provider's breaker: open here too, cooling down when it does there."""
        if self.state != "open":
            self._move("open", reason, listener)
        self._opened_at = self._clock() - max(0.0, self.config.cooldown_s - remaining_s)

    def sync_close(self, reason: str, listener: Listener | None = None) -> None:
        """Another process's half-open probe succeeded: close here too."""
        if self.state != "closed":
            self.consecutive = 0
            self._window.clear()
            self._move("closed", reason, listener)

    def _should_open(self) -> bool:
        cfg = self.config
        if self.consecutive >= cfg.failures:
            return True
        if cfg.failure_rate is not None and len(self._window) >= cfg.failures:
            return sum(self._window) / len(self._window) >= cfg.failure_rate
        return False
