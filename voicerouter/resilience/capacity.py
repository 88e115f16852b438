"""Concurrent-session limits per route and per provider instance, and the admission gate.

A session takes one slot on its route (`resilience.max_concurrent_sessions`) and, for each stage,
one slot on the first provider in its order that has room (`max_concurrent_sessions` of the
provider); a full provider is passed over for the next one. When a stage has no provider with
room, or the route is full, the session is refused with `CapacityError` and a `refused` event.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from voicerouter.errors import CapacityError
from voicerouter.resilience.state import ProviderState, provider_state, route_counts
from voicerouter.session.events import EventType

if TYPE_CHECKING:
    from voicerouter.routing.plan import SessionPlan
    from voicerouter.session.events import EventBus

_HOLDS: dict[str, set[str]] = {}  # session id -> provider instance keys it holds a slot on


def holds(session_id: str, state: ProviderState) -> bool:
    return state.key in _HOLDS.get(session_id, set())


def acquire(session_id: str, state: ProviderState) -> bool:
    """Take a slot for this session (idempotent). False when the provider is full."""
    held = _HOLDS.setdefault(session_id, set())
    if state.key in held:
        return True
    if not state.has_room():
        return False
    state.active_sessions += 1
    held.add(state.key)
    return True


def release(session_id: str, state: ProviderState) -> None:
    held = _HOLDS.get(session_id)
    if held and state.key in held:
        held.discard(state.key)
        state.active_sessions = max(0, state.active_sessions - 1)
        if not held:
            _HOLDS.pop(session_id, None)


def reset() -> None:
    _HOLDS.clear()


class SessionAdmission:
    """`async with SessionAdmission(plan, bus):` holds the session's slots for its lifetime.

    Raises `CapacityError` (exit code 3) on entry when the route or a whole stage is full.
    """

    def __init__(self, plan: SessionPlan, bus: EventBus | None = None) -> None:
        self.plan = plan
        self.bus = bus
        self.session_id = plan.session_id
        self._route_taken = False
        self._states: list[ProviderState] = []
        self.picked: dict[str, str | None] = {}  # stage -> provider holding the slot (None: unlimited)

    def _state(self, name: str) -> ProviderState:
        config: Any = self.plan.providers.get(name)
        return provider_state(name, config, self.plan.resilience.breaker)

    def _refuse(self, message: str, *, stage: str | None, hint: str, providers: list[str] | None = None) -> CapacityError:
        if self.bus is not None:
            self.bus.emit(
                EventType.REFUSED, provider=",".join(providers) if providers else None, message=message,
                stage=stage, error_type="CapacityError", reason="capacity",
            )
        return CapacityError(message, route=self.plan.route, session_id=self.session_id, hint=hint)

    async def __aenter__(self) -> SessionAdmission:
        self.enter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.exit()

    def enter(self) -> None:
        limit = self.plan.resilience.max_concurrent_sessions
        routes = route_counts()
        route = self.plan.route
        if limit is not None and routes.get(route, 0) >= limit:
            raise self._refuse(
                f"route {route!r} is at its limit of {limit} concurrent session(s)",
                stage=None,
                hint="wait for a session to end or raise resilience.max_concurrent_sessions",
            )
        routes[route] = routes.get(route, 0) + 1
        self._route_taken = True
        try:
            for stage in self.plan.stages():
                self._admit_stage(stage.stage, list(stage.providers))
        except CapacityError:
            self.exit()
            raise

    def _admit_stage(self, stage: str, names: list[str]) -> None:
        full: list[str] = []
        for name in names:
            state = self._state(name)
            if state.limit is None:
                self.picked[stage] = None
                return
            if acquire(self.session_id, state):
                self._states.append(state)
                self.picked[stage] = name
                return
            full.append(f"{name} ({state.active_sessions}/{state.limit})")
        raise self._refuse(
            f"no {stage} provider has room for another session: {', '.join(full)} full",
            stage=stage,
            hint="raise max_concurrent_sessions of a provider or add one to the chain",
            providers=names,
        )

    def exit(self) -> None:
        for state in self._states:
            release(self.session_id, state)
        self._states.clear()
        if self._route_taken:
            routes = route_counts()
            routes[self.plan.route] = max(0, routes.get(self.plan.route, 1) - 1)
            self._route_taken = False


def refusal_reason(plan: SessionPlan) -> str | None:
    """Why a session of `plan` would be refused right now (route or a whole stage full), or None.

    The same decision `SessionAdmission.enter` makes, without taking anything: a webhook asks it
    before answering a call, so a call that cannot be served is declined instead of answered.
    """
    limit = plan.resilience.max_concurrent_sessions
    if limit is not None and route_counts().get(plan.route, 0) >= limit:
        return f"route {plan.route!r} is at its limit of {limit} concurrent session(s)"
    for stage in plan.stages():
        states = [provider_state(n, plan.providers.get(n), plan.resilience.breaker) for n in stage.providers]
        if states and not any(s.limit is None or s.has_room() for s in states):
            return f"no {stage.stage} provider has room for another session"
    return None


class ProcessCapacity:
    """The process-wide maximum of concurrent calls (`serve --max-sessions`), per call id.

    A webhook reserves a slot when it answers a call (the media stream arrives a moment later and
    takes it over); a reservation that no stream claims expires after `reserve_s`.
    """

    def __init__(self, limit: int | None, *, reserve_s: float = 30.0) -> None:
        self.limit = limit
        self.reserve_s = reserve_s
        self.active: set[str] = set()
        self._reserved: dict[str, float] = {}  # call id -> monotonic expiry

    def _expire(self) -> None:
        now = time.monotonic()
        for call_id in [c for c, until in self._reserved.items() if until <= now]:
            del self._reserved[call_id]

    @property
    def used(self) -> int:
        self._expire()
        return len(self.active) + len(self._reserved)

    def full(self) -> bool:
        return self.limit is not None and self.used >= self.limit

    def reserved(self, call_id: str) -> bool:
        self._expire()
        return call_id in self._reserved

    def reserve(self, call_id: str) -> bool:
        if call_id in self.active or self.reserved(call_id):
            return True
        if self.full():
            return False
        self._reserved[call_id] = time.monotonic() + self.reserve_s
        return True

    def acquire(self, call_id: str) -> bool:
        """Take a slot for a call that is starting (its reservation, if any, becomes the slot)."""
        if call_id in self.active:
            return True
        if self._reserved.pop(call_id, None) is None and self.full():
            return False
        self.active.add(call_id)
        return True

    def release(self, call_id: str) -> None:
        self.active.discard(call_id)
        self._reserved.pop(call_id, None)
