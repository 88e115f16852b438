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
    from voicerouter.fleet import SharedState
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
        self._fleet: SharedState | None = None  # the fleet's shared state, while it holds our slots

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
        from voicerouter import fleet

        shared = fleet.current()
        if shared is None:
            self.enter()
            return self
        if self.bus is not None:
            shared.watch(self.bus)
        picks = await self._enter_fleet(shared)
        try:
            self.enter(picks)  # mirrored locally, for this process's status and counts
        except CapacityError:
            await self._leave_fleet()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.exit()
        await self._leave_fleet()

    async def _enter_fleet(self, shared: SharedState) -> dict[str, str | None]:
        """Take the session's slots fleet-wide in one decision: the fleet and route limits, then per
        stage the first provider with room. Returns the provider picked per stage (None: no limit).
        A call's reservation (made by its webhook, `reserve_fleet`) is claimed in the same decision."""
        self._fleet = shared
        scopes = FleetScopes(self.plan, shared)
        code, detail = await shared.admit(self.session_id, scopes.fixed, scopes.groups)
        if code != 0:
            self._fleet = None
            message, stage, hint, providers = scopes.refusal(code, detail)
            raise self._refuse(message, stage=stage, hint=hint, providers=providers)
        return {stage: (names[pick - 1] if pick else None)
                for (stage, names, _), pick in zip(scopes.stages, detail, strict=True)}

    async def _leave_fleet(self) -> None:
        shared, self._fleet = self._fleet, None
        if shared is not None:
            await shared.release(self.session_id)

    def enter(self, picks: dict[str, str | None] | None = None) -> None:
        """Take the session's slots in this process (`picks`: the providers the fleet admitted, per stage)."""
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
                names = list(stage.providers)
                if picks is not None and stage.stage in picks:
                    pick = picks[stage.stage]
                    if pick is None:
                        self.picked[stage.stage] = None
                        continue
                    names = [pick]
                self._admit_stage(stage.stage, names)
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


class FleetScopes:
    """The fleet-wide limits a session of `plan` takes a slot in: the fleet and route limits (all
    needed), and per stage its limited providers in order (the first with room is taken; a stage
    with an unlimited provider after them may take none)."""

    def __init__(self, plan: SessionPlan, shared: SharedState) -> None:
        self.plan = plan
        self.fixed: list[tuple[str, int]] = []
        if shared.max_sessions is not None:
            self.fixed.append(("fleet", shared.max_sessions))
        limit = plan.resilience.max_concurrent_sessions
        if limit is not None:
            self.fixed.append((f"route:{plan.route}", limit))
        self.stages: list[tuple[str, list[str], bool]] = []  # stage, limited candidates, may take none
        self.states: dict[str, ProviderState] = {}
        for stage in plan.stages():
            limited: list[str] = []
            unlimited_after = False
            for name in stage.providers:
                state = self.states.setdefault(name, provider_state(name, plan.providers.get(name),
                                                                    plan.resilience.breaker))
                if state.limit is None:
                    unlimited_after = True  # the stage can always fall back on it, without a slot
                    break
                limited.append(name)
            self.stages.append((stage.stage, limited, unlimited_after))
        self.groups = [([(f"provider:{self.states[n].key}", self.states[n].limit or 0) for n in names], optional)
                       for _, names, optional in self.stages]

    def refusal(self, code: int, detail: list[int]) -> tuple[str, str | None, str, list[str] | None]:
        """(message, stage, hint, providers) of a refusal `SharedState.admit` answered."""
        if code == 1:
            scope, most = self.fixed[detail[0] - 1]
            what = "the fleet" if scope == "fleet" else f"route {self.plan.route!r}"
            return (f"{what} is at its limit of {most} concurrent session(s) fleet-wide", None,
                    "wait for a session to end or raise "
                    + ("state.max_sessions" if scope == "fleet" else "resilience.max_concurrent_sessions"), None)
        stage, names, _ = self.stages[detail[0] - 1]
        full = ", ".join(f"{n} ({self.states[n].limit})" for n in names)
        return (f"no {stage} provider has room for another session fleet-wide: {full} full", stage,
                "raise max_concurrent_sessions of a provider or add one to the chain", names)


async def reserve_fleet(plan: SessionPlan) -> str | None:
    """A webhook's fleet-wide admission of a call whose session will be `plan`: its slots are
    reserved for a moment (the session claims them when the media stream arrives). Returns why the
    fleet cannot take the call, or None (admitted, or no fleet, or the shared state cannot decide now)."""
    from voicerouter import fleet

    shared = fleet.current()
    if shared is None:
        return None
    scopes = FleetScopes(plan, shared)
    reply = await shared.reserve(plan.session_id, scopes.fixed, scopes.groups)
    if reply is None or reply[0] == 0:
        return None
    return scopes.refusal(*reply)[0]


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
