"""The attempt loop every stage wrapper shares: pick, try, retry, hedge, fail over, report.

A stage call is expressed as `op(member, attempt) -> AsyncIterator[T]`; its first item is the
"first result" (first transcript, first audio byte, first S2S event) and must arrive within the
first-result deadline, later items within the stall deadline. A failure before the first result
is retried or failed over; a failure after it restarts the whole call on the next provider (the
caller learns that from the `failover` event's restart field). The final attempt of the final
provider gets the rest of the turn deadline instead: with nothing left to fail over to, a shorter
deadline would only turn a slow answer into a failed turn.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from voicerouter.errors import (
    AllProvidersFailed,
    CapacityError,
    PermanentProviderError,
    ProviderError,
    ProviderTimeout,
    RateLimitedError,
    TransientProviderError,
)
from voicerouter.providers.base import SessionInfo
from voicerouter.resilience import capacity
from voicerouter.resilience.policy import StageSettings
from voicerouter.resilience.retry import as_provider_error, decide
from voicerouter.resilience.state import ProviderState, next_round_robin
from voicerouter.session.events import Event, EventBus, EventType

T = TypeVar("T")
FirstTimeout = float | Callable[["Member", int], float]
_EMPTY = object()  # an op that ended without any item (e.g. nothing to say)


@dataclass
class Member:
    """One provider of a stage chain: its name, the (maybe fault-wrapped) client, its shared state."""

    name: str
    provider: Any
    state: ProviderState


def runs_locally(provider: Any) -> bool:
    """Is this a CPU-bound engine in this process (PocketSphinx, Piper, Whisper, ...)? Its slowness
    means a busy machine, not a provider outage. Plugins say so with `runs_locally = True`."""
    inner = getattr(provider, "inner", provider)  # a fault-injection wrapper
    flag = getattr(type(inner), "runs_locally", None)
    if flag is not None:
        return bool(flag)
    return type(inner).__module__.startswith("voicerouter.providers.local.")


def machine_load() -> tuple[float | None, int]:
    """(1-minute load average or None, CPUs) for the honest 'the machine is busy' event."""
    import os

    try:
        load: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    return load, os.cpu_count() or 1


class TurnTracker:
    """Follows the bus so wrappers know the turn number without being told.

    Speech-side stages (STT, S2S) work on a turn from its first syllable, so they also follow
    `speech_start`; TTS and the agent work after `turn_end` (a barge-in's speech_start must not
    relabel the reply still being spoken).
    """

    def __init__(self, bus: EventBus, *, follow_speech: bool = False) -> None:
        self.turn: int | None = None
        self._types = {EventType.TURN_END, EventType.SPEECH_START} if follow_speech else {EventType.TURN_END}
        bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if event.type in self._types:
            turn = event.turn if event.turn is not None else event.data.get("turn")
            if isinstance(turn, int):
                self.turn = turn

    def __call__(self) -> int | None:
        return self.turn


class _Failed(Exception):
    def __init__(self, member: Member, error: ProviderError) -> None:
        super().__init__(error.message)
        self.member = member
        self.error = error


@dataclass
class _Started(Generic[T]):
    member: Member
    iterator: AsyncIterator[T]
    first: Any
    latency_s: float
    attempt: int
    admitted_at: float  # the breaker's clock when this attempt was let through


async def stream_of(result: Any) -> AsyncIterator[Any]:
    """Iterate what a streaming method returned, also when it is a coroutine that returns the iterator."""
    if inspect.isawaitable(result):
        result = await result
    try:
        async for item in result:
            yield item
    finally:
        await _aclose(result)  # now, not at garbage collection: it may hold a connection


async def last_item(iterator: AsyncIterator[T]) -> T | None:
    """Drain a single-result call (batch transcript, agent reply, connection) and return its result."""
    result: T | None = None
    async for item in iterator:
        result = item
    return result


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception:  # closing a broken stream must not hide the error that broke it
        pass


class StageRunner:
    """Runs calls of one stage over its ordered members for one session."""

    def __init__(
        self,
        stage: str,
        members: list[Member],
        settings: StageSettings,
        bus: EventBus,
        *,
        session: SessionInfo,
        strategy: str = "failover",
        rng: random.Random | None = None,
        turn: Callable[[], int | None] | None = None,
        monitored: Callable[[Member], bool] | None = None,
    ) -> None:
        self.stage = stage
        self.members = members
        self.settings = settings
        self.bus = bus
        self.session = session
        self.strategy = strategy
        self.rng = rng or random.Random()
        self.turn = turn or (lambda: None)
        self._monitored = monitored or (lambda m: False)
        self._lazy_slots: list[ProviderState] = []
        self.last_used: Member | None = None
        self.last_admitted_at: float | None = None  # on last_used's breaker clock
        if strategy == "round_robin" and members:
            # rotate once per session: a session keeps one voice/model, sessions spread over providers
            shift = next_round_robin(f"{stage}:" + ",".join(m.state.key for m in members)) % len(members)
            self.members = members[shift:] + members[:shift]
        for member in self.members:
            member.state.buses.add(bus)

    # -- selection -------------------------------------------------------------------------------

    def order(self) -> list[Member]:
        if self.strategy == "least_latency":
            # untried providers first (latency unknown), then fastest; ties keep the table's order
            return sorted(self.members, key=lambda m: -1.0 if m.state.latency_s is None else m.state.latency_s)
        return self._demote_outliers(list(self.members))

    def _demote_outliers(self, members: list[Member]) -> list[Member]:
        """Latency outlier ejection (like Envoy's): a provider whose recent first-result p50 exceeds the
        next provider's by `outlier.margin_ms` (both with `min_samples` recent results) is tried after it
        for `outlier.cooldown_s` (longer after each demotion in a row), then gets a fresh chance."""
        config = self.settings.outlier
        if not config.enabled or len(members) < 2:
            return members
        now = time.monotonic()
        demoted: list[Member] = []
        for index, member in enumerate(members[:-1]):
            state = member.state
            if state.demoted_until > now:
                demoted.append(member)
                continue
            following = next((m for m in members[index + 1:] if m.state.demoted_until <= now), None)
            mine = state.percentile(0.5) if len(state.recent) >= config.min_samples else None
            theirs = (following.state.percentile(0.5)
                      if following is not None and len(following.state.recent) >= config.min_samples else None)
            if following is None or mine is None or theirs is None or mine * 1000 <= theirs * 1000 + config.margin_ms:
                if state.demoted_until and mine is not None:
                    state.demotions = 0  # served its time and is no longer an outlier
                continue
            state.demotions += 1
            lasts = config.cooldown_s * min(state.demotions, 10)
            state.demoted_until = now + lasts
            state.recent.clear()  # after the cooldown it is judged on fresh results
            demoted.append(member)
            self.bus.emit(
                EventType.WARNING, provider=member.name, turn=self.turn(), stage=self.stage, reason="latency_outlier",
                message=(f"{member.name} demoted for {lasts:g} s: recent first results p50 {mine * 1000:.0f} ms vs "
                         f"{following.name}'s {theirs * 1000:.0f} ms (margin {config.margin_ms} ms)"),
                p50_ms=round(mine * 1000, 1), next_provider=following.name, next_p50_ms=round(theirs * 1000, 1),
                demoted_s=lasts,
            )
        if not demoted:
            return members
        rest = [m for m in members if m not in demoted]
        return rest[:1] + demoted + rest[1:]  # tried right after the first provider that is not an outlier

    def _breaker_listener(self, member: Member):
        def listener(state: str, previous: str, reason: str) -> None:
            self.bus.emit(
                EventType.BREAKER, provider=member.name, turn=self.turn(), stage=self.stage,
                state=state, previous=previous, reason=reason, failures=member.state.breaker.consecutive,
                cooldown_s=member.state.breaker.config.cooldown_s,
            )

        return listener

    def blocked(self, member: Member) -> bool:
        """Would `_usable` turn this member away for health or breaker reasons? (Claims nothing.)"""
        state = member.state
        if not state.healthy:
            cooled = time.monotonic() - state.unhealthy_since >= state.breaker.config.cooldown_s
            if self._monitored(member) or not cooled:
                return True
        breaker = state.breaker
        return breaker.state == "open" and not breaker.cooled()

    def _skip_error(self, member: Member) -> ProviderError:
        state = member.state
        what = "unhealthy" if not state.healthy else "circuit breaker open"
        last = f" after: {state.last_error}" if state.last_error else ""
        return TransientProviderError(f"skipped: {what}{last}", provider=member.name).with_context(
            route=self.session.route, session_id=self.session.session_id
        )

    def _usable(self, member: Member, *, last: bool = False) -> ProviderError | None:
        """None if the member may be tried now, else why not (claims the half-open probe if any).

        A provider inside a 429's Retry-After is skipped unless it is the `last` one left (then the
        attempt waits out the Retry-After if the deadline allows).
        """
        state = member.state
        if not state.healthy:
            cooled = time.monotonic() - state.unhealthy_since >= state.breaker.config.cooldown_s
            if self._monitored(member) or not cooled:
                return TransientProviderError(f"skipped: unhealthy ({state.last_error})", provider=member.name)
        limited = state.rate_limited_for()
        if limited > 0 and not last:
            return RateLimitedError(f"skipped: rate limited for {limited:.1f} s more (Retry-After)",
                                    provider=member.name, retry_after=limited)
        needs_slot = state.limit is not None and not capacity.holds(self.session.session_id, state)
        if needs_slot and not state.has_room():
            return CapacityError(
                f"skipped: at capacity ({state.active_sessions}/{state.limit} sessions)", provider=member.name
            )
        if not state.breaker.allow(self._breaker_listener(member)):
            last = f" after: {state.last_error}" if state.last_error else ""
            return TransientProviderError(f"skipped: circuit breaker open{last}", provider=member.name)
        if needs_slot and capacity.acquire(self.session.session_id, state):
            self._lazy_slots.append(state)  # held for the rest of the session, released by aclose()
        return None

    def _next_usable(self, queue: list[Member], errors: list[ProviderError]) -> Member | None:
        while queue:
            member = queue.pop(0)
            why = self._usable(member, last=not queue)
            if why is None:
                return member
            errors.append(why.with_context(route=self.session.route, session_id=self.session.session_id))
        return None

    # -- outcomes --------------------------------------------------------------------------------

    def _failed(self, member: Member, error: ProviderError, admitted_at: float | None = None) -> None:
        """Count a failure (`admitted_at`: the breaker's clock when the failed call was let through)."""
        state = member.state
        state.last_error = error.message
        listener = self._breaker_listener(member)
        if isinstance(error, PermanentProviderError):
            state.breaker.trip(f"{error.reason}: {error.message}", listener)
            if state.mark_unhealthy(error.message):
                self.bus.emit(
                    EventType.HEALTH, provider=member.name, turn=self.turn(), stage=self.stage,
                    healthy=False, error=error.message, source="request",
                )
        else:
            state.breaker.record_failure(f"{error.reason}: {error.message}", listener, started_at=admitted_at)
        if isinstance(error, RateLimitedError) and error.retry_after:
            # every session skips it until then (the chain fails over at once when it can)
            state.limited_until = max(state.limited_until, time.monotonic() + error.retry_after)
        if isinstance(error, ProviderTimeout):
            state.observe_latency(self.settings.first_result_timeout_s)

    def _first_result(self, member: Member, latency_s: float, attempt: int, admitted_at: float | None) -> None:
        """The first result arrived: latency and `provider_used`. Success waits for the call to complete."""
        state = member.state
        state.observe_latency(latency_s)
        self.last_used = member
        self.last_admitted_at = admitted_at
        self.bus.emit(
            EventType.PROVIDER_USED, provider=member.name, turn=self.turn(), stage=self.stage,
            latency_ms=round(latency_s * 1000, 1), attempt=attempt,
        )
        if latency_s > self.settings.first_result_timeout_s and runs_locally(member.provider):
            self._machine_busy(member, latency_s, max(0, state.in_flight))

    def _machine_busy(self, member: Member, waited_s: float, queued: int) -> None:
        """A local engine was slower than its deadline: say that the machine, not a provider, is the bottleneck."""
        load, cpus = machine_load()
        busy = f"load {load:.1f} on {cpus} CPUs" if load is not None else f"{cpus} CPUs"
        self.bus.emit(
            EventType.WARNING, provider=member.name, turn=self.turn(), stage=self.stage, reason="machine_busy",
            message=(f"{member.name} runs on this machine and needed {waited_s * 1000:.0f} ms or more with {queued} "
                     f"call(s) ahead of it ({busy}): the machine is the bottleneck, not a provider outage"),
            waited_ms=round(waited_s * 1000, 1), queued=queued, load=load, cpus=cpus,
        )

    def _completed(self, member: Member, admitted_at: float | None) -> None:
        """The call completed (a stream that breaks after its first chunk is a failure, not this)."""
        state = member.state
        state.breaker.record_success(self._breaker_listener(member), started_at=admitted_at)
        if state.mark_healthy():
            self.bus.emit(EventType.HEALTH, provider=member.name, turn=self.turn(), stage=self.stage,
                          healthy=True, error=None, source="request")

    def _context(self, error: ProviderError, member: Member) -> ProviderError:
        return error.with_context(provider=member.name, route=self.session.route, session_id=self.session.session_id)

    # -- the loop --------------------------------------------------------------------------------

    async def run(
        self,
        op: Callable[[Member, int], AsyncIterator[T]],
        *,
        first_timeout_s: FirstTimeout | None = None,
        restart_key: str = "restarted",
        queue: list[Member] | None = None,
        errors: list[ProviderError] | None = None,
        previous: tuple[Member, ProviderError, bool] | None = None,
        preclaimed: Member | None = None,
        preclaimed_at: float | None = None,
        restart_detail: Callable[[], dict[str, Any]] | None = None,
        hedge_after_s: Callable[[Member], float | None] | None = None,
    ) -> AsyncIterator[T]:
        """Yield the items of one call, failing over until a provider completes it.

        `queue` (default: the strategy's order), `errors` and `previous` (who failed, why, mid-stream?)
        let a wrapper continue a call it began itself; `preclaimed` was already admitted by it (at
        `preclaimed_at` on its breaker's clock: only the half-open probe's own success closes a breaker).
        `restart_detail()` adds fields to the event of a restart after a mid-stream failure.
        `hedge_after_s(member)` hedges a member the stage's settings would not hedge (None: no hedge).
        """
        loop = asyncio.get_running_loop()
        started_at = loop.time()
        # dead air counts from when the caller started waiting: the call's start, or its request for
        # the item that never came (a mid-stream failure), never from each provider's own start
        waiting_since = started_at
        deadline = started_at + self.settings.turn_deadline_s
        first_timeout = first_timeout_s or self.settings.first_result_timeout_s
        errors = [] if errors is None else errors
        queue = self.order() if queue is None else list(queue)
        restarts: dict[str, int] = {}  # mid-stream failures retried on the same provider
        while True:
            admitted_at: float | None = None
            if preclaimed is not None and queue and queue[0] is preclaimed:
                member: Member | None = queue.pop(0)
                admitted_at, preclaimed = preclaimed_at, None
            else:
                member = self._next_usable(queue, errors)
            if member is None:
                break
            if previous is not None and previous[0] is member:
                failed, error, mid = previous
                detail = restart_detail() if mid and restart_detail is not None else {}
                self.bus.emit(
                    EventType.RETRY, provider=member.name, turn=self.turn(), stage=self.stage,
                    attempt=restarts.get(member.name, 0) + 1, delay_ms=0.0, reason=error.reason, error=error.message,
                    why="restart after mid-stream failure" if mid else "replay", **({restart_key: True} if mid else {}),
                    **detail,
                )
            elif previous is not None:
                failed, error, mid = previous
                extra = {restart_key: True} if mid else {}
                if mid and restart_detail is not None:
                    extra.update(restart_detail())
                self.bus.emit(
                    EventType.FAILOVER, provider=failed.name, turn=self.turn(), stage=self.stage,
                    from_provider=failed.name, to_provider=member.name, reason=error.reason,
                    error=error.message, elapsed_ms=round((loop.time() - waiting_since) * 1000, 1), **extra,
                )
            try:
                started = await self._start(member, queue, op, deadline, first_timeout, errors, admitted_at,
                                            hedge_after_s)
            except _Failed as failed_exc:
                previous = (failed_exc.member, failed_exc.error, False)
                continue
            member, iterator = started.member, started.iterator
            self._first_result(member, started.latency_s, started.attempt, started.admitted_at)
            try:
                if started.first is not _EMPTY:
                    yield started.first
                    waiting_since = loop.time()
                last_resort_engine = not queue and runs_locally(member.provider)
                while True:
                    stall = self.settings.stall_timeout_s
                    if last_resort_engine:  # a busy CPU is slow, not dead: only the turn deadline applies
                        stall = max(stall, deadline - loop.time())
                    try:
                        async with asyncio.timeout(stall):
                            item = await anext(iterator)
                    except StopAsyncIteration:
                        self._completed(member, started.admitted_at)
                        return
                    yield item
                    waiting_since = loop.time()
            except (GeneratorExit, asyncio.CancelledError):
                member.state.breaker.abandon(started.admitted_at)  # the caller stopped listening
                raise
            except Exception as exc:
                if isinstance(exc, TimeoutError):
                    error: ProviderError = ProviderTimeout(
                        f"stalled: no data for {self.settings.stall_timeout_s * 1000:.0f} ms mid-stream"
                    )
                else:
                    error = as_provider_error(exc, member.name)
                error = self._context(error, member)
                self._failed(member, error, started.admitted_at)
                errors.append(error)
                previous = (member, error, True)
                if (
                    error.retryable
                    and restarts.get(member.name, 0) < self.settings.retries
                    and member.state.breaker.state != "open"
                    and loop.time() < deadline
                ):
                    # after the others, restart on this provider too: one broken stream is often a blip
                    restarts[member.name] = restarts.get(member.name, 0) + 1
                    queue.append(member)
            finally:
                await _aclose(iterator)
        raise AllProvidersFailed(
            self.stage, errors, route=self.session.route, session_id=self.session.session_id,
            hint="see each provider's error; check keys, endpoints and the breaker/health events",
        )

    async def _start(
        self,
        member: Member,
        queue: list[Member],
        op: Callable[[Member, int], AsyncIterator[T]],
        deadline: float,
        first_timeout: FirstTimeout,
        errors: list[ProviderError],
        admitted_at: float | None = None,
        hedge_override: Callable[[Member], float | None] | None = None,
    ) -> _Started[T]:
        hedge_after = self._hedge_after(member) if queue else None
        if hedge_after is None and queue and hedge_override is not None:
            hedge_after = hedge_override(member)
        if hedge_after is None or not queue:
            return await self._attempts(member, op, deadline, first_timeout, errors, has_next=bool(queue),
                                        admitted_at=admitted_at)
        primary = asyncio.create_task(self._attempts(member, op, deadline, first_timeout, errors, has_next=True,
                                                     admitted_at=admitted_at))
        try:
            done, _ = await asyncio.wait({primary}, timeout=hedge_after)
        except asyncio.CancelledError:
            primary.cancel()
            await asyncio.gather(primary, return_exceptions=True)
            raise
        if done:
            return primary.result()
        second = self._next_usable(queue, errors)
        if second is None:
            return await self._attempts_task(primary)
        member.state.hedges += 1
        from voicerouter.resilience.hedging import race

        return await race(
            primary,
            lambda: self._attempts(second, op, deadline, first_timeout, errors, has_next=bool(queue)),
            primary_name=member.name,
            secondary_name=second.name,
            runner=self,
            close=lambda started: _aclose(started.iterator),
            hedge_after_s=hedge_after,
        )

    def _hedge_after(self, member: Member) -> float | None:
        """Seconds of silence before the next provider is raced: fixed, or (auto) the provider's own
        recent p90 while hedges stay within `hedge_budget` of its calls; None: no hedge."""
        state = member.state
        state.calls += 1
        if not self.settings.hedge_auto:
            return self.settings.hedge_after_s
        if len(state.recent) < self.settings.outlier.min_samples:
            return None  # its usual pace is not known yet
        if state.hedges + 1 > self.settings.hedge_budget * state.calls:
            return None  # the extra requests would exceed the budget
        return state.percentile(0.9)

    async def _attempts(
        self,
        member: Member,
        op: Callable[[Member, int], AsyncIterator[T]],
        deadline: float,
        first_timeout: FirstTimeout,
        errors: list[ProviderError],
        *,
        has_next: bool,
        admitted_at: float | None = None,
    ) -> _Started[T]:
        """Try one member until it gives a first result, retrying what is worth retrying.

        `admitted_at`: when the first attempt was let through, if before this call (a live stream).
        """
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            t0 = loop.time()
            remaining = deadline - t0
            if remaining <= 0:
                error = self._context(
                    ProviderTimeout(f"turn deadline of {self.settings.turn_deadline_s * 1000:.0f} ms used up"), member
                )
                errors.append(error)
                raise _Failed(member, error)
            limited = member.state.rate_limited_for() if attempt == 1 else 0.0
            if limited > 0:  # the last provider left is inside a Retry-After: honour it if the deadline allows
                if limited >= remaining:
                    error = self._context(RateLimitedError(
                        f"rate limited for {limited:.1f} s more, beyond the turn deadline", retry_after=limited), member)
                    errors.append(error)
                    raise _Failed(member, error)
                await asyncio.sleep(limited)
                t0 = loop.time()
                remaining = deadline - t0
            limit = first_timeout(member, attempt) if callable(first_timeout) else first_timeout
            local, queued = runs_locally(member.provider), member.state.in_flight
            if not has_next and (local or attempt > self.settings.retries):
                # nothing left to fail over to: cutting this attempt short would only turn slow into failed
                # (and a CPU-bound engine's retry would only queue up behind itself)
                limit = remaining
            elif local:
                limit *= 1 + queued  # the calls ahead of this one in the engine's queue run first
            timeout = min(limit, remaining)
            if attempt > 1 or admitted_at is None:
                admitted_at = member.state.breaker.now()
            iterator = op(member, attempt)
            member.state.in_flight += 1
            try:
                async with asyncio.timeout(timeout):
                    try:
                        first = await anext(iterator)
                    except StopAsyncIteration:
                        first = _EMPTY
                member.state.in_flight -= 1
            except asyncio.CancelledError:
                member.state.in_flight -= 1
                member.state.breaker.abandon(admitted_at)
                await _aclose(iterator)
                raise
            except Exception as exc:
                member.state.in_flight -= 1
                await _aclose(iterator)
                if isinstance(exc, TimeoutError):
                    error = ProviderTimeout(f"no first result within {timeout * 1000:.0f} ms")
                else:
                    error = as_provider_error(exc, member.name)
                error = self._context(error, member)
                if not error.fails_over:
                    # the request itself is refused (a bad or opted-out recipient): no other provider may
                    # take it, and the provider answered properly
                    self._completed(member, admitted_at)
                    raise error from None
                if local and isinstance(error, ProviderTimeout):
                    self._machine_busy(member, timeout, queued)  # not an outage: no breaker, no health mark
                else:
                    self._failed(member, error, admitted_at)
                decision = decide(
                    error, attempt=attempt, retries=self.settings.retries, remaining_s=deadline - loop.time(),
                    has_next=has_next, backoff=self.settings.backoff, rng=self.rng, realtime=self.settings.realtime,
                )
                if decision.action == "retry" and member.state.breaker.state != "open":
                    self.bus.emit(
                        EventType.RETRY, provider=member.name, turn=self.turn(), stage=self.stage,
                        attempt=attempt + 1, delay_ms=round(decision.delay_s * 1000, 1), reason=error.reason,
                        error=error.message, why=decision.why,
                        elapsed_ms=round((loop.time() - deadline + self.settings.turn_deadline_s) * 1000, 1),
                    )
                    await asyncio.sleep(decision.delay_s)
                    continue
                errors.append(error)
                raise _Failed(member, error) from None
            return _Started(member, iterator, first, loop.time() - t0, attempt, admitted_at)

    @staticmethod
    async def _attempts_task(task: asyncio.Task[_Started[T]]) -> _Started[T]:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()
            raise

    async def aclose(self) -> None:
        for state in self._lazy_slots:
            capacity.release(self.session.session_id, state)
        self._lazy_slots.clear()


class ChainProvider:
    """What every stage chain shares: it is a provider of its stage's kind over the runner's members."""

    kind = ""
    type = "chain"

    def __init__(self, runner: StageRunner) -> None:
        self.runner = runner
        self.name = f"{self.kind}:" + ",".join(m.name for m in runner.members)

    async def probe(self) -> None:
        """The preferred provider's probe (health checks probe every member themselves)."""
        if self.runner.members:
            await self.runner.members[0].provider.probe()

    async def aclose(self) -> None:
        await self.runner.aclose()
