"""The resilience layer: every stage's providers behind one object of the stage's own protocol.

`build_stage` turns a `StagePlan` into an STT/TTS/S2S provider that selects, retries, enforces
deadlines, hedges, trips breakers and fails over inside; the session never sees failover, only
the events (`failover`, `retry`, `hedge`, `breaker`, `health`, `provider_used`, `refused`).

The rules, per call of a stage (a sentence to speak, an utterance to transcribe, a reply):
- Providers are tried in the plan's order (round_robin rotates it once per session, least_latency
  sorts it by the first-result latency EWMA, untried first); skipped while their breaker is open,
  while unhealthy, or when full (`max_concurrent_sessions`).
- Each attempt must produce its first result within `first_result_timeout_ms` and each later
  chunk within `stall_timeout_ms`; the whole stage call within `turn_deadline_ms`. The last
  attempt of the last provider may use the rest of the turn deadline.
- Transient errors retry (exponential backoff, full jitter) up to `retries`; a 429 fails over at
  once when a fallback is left and its Retry-After is remembered (the provider is skipped until
  then; as the last one left it is waited for when that fits the deadline); a timeout fails over at once (a retry would double
  the dead air); permanent errors (auth, bad request) fail over at once, open the breaker and
  mark the provider unhealthy.
- With `hedge_after_ms`, a provider silent for that long is raced by the next one; the first
  to answer wins and the other is cancelled.
- No lost words: STT keeps the utterance's audio and replays all of it to a fallback; a TTS
  sentence that breaks mid-way is finished by the next provider from the first word not yet heard
  (`restarted_sentence`, `resumed_at_word`; see `resilience.resume`);
  S2S reconnects with the conversation and resends the user's turn (`restarted_reply`).
Breakers, health and latency are process-wide per provider instance (`state.snapshot()`).
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING, Any

from voicerouter.config.schema import ResilienceConfig
from voicerouter.errors import ProviderError
from voicerouter.providers.base import SessionInfo
from voicerouter.resilience import health
from voicerouter.resilience.capacity import SessionAdmission
from voicerouter.resilience.faults import FaultPlan, parse_faults
from voicerouter.resilience.policy import StageSettings
from voicerouter.resilience.state import snapshot

if TYPE_CHECKING:
    from voicerouter.routing.plan import StagePlan
    from voicerouter.session.events import EventBus

__all__ = ["FaultPlan", "SessionAdmission", "build_stage", "parse_faults", "reset", "snapshot", "wrap_agent"]


class _Unavailable:
    """Stands in for a provider that could not be built, so the chain fails over past it."""

    supports_streaming = True  # so an STT chain tries it (and fails over) in its place in the order

    def __init__(self, name: str, kind: str, error: ProviderError) -> None:
        self.name, self.kind, self.type, self.error = name, kind, "unavailable", error

    async def _raise(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error

    transcribe = open_stream = connect = probe = _raise

    def synthesize(self, text: str) -> Any:
        async def fail() -> Any:
            raise self.error
            yield  # pragma: no cover

        return fail()

    async def aclose(self) -> None:
        return None


def _config(pool: Any, name: str) -> Any:
    getter = getattr(pool, "config", None)
    if callable(getter):
        try:
            return getter(name)
        except Exception:  # an unknown name surfaces when the provider itself is built
            return None
    return getattr(pool, "configs", {}).get(name)


def _runner(stage: str, members: list[Any], settings: StageSettings, bus: EventBus, session: SessionInfo,
            strategy: str, seed: int | None, turn: Any = None) -> Any:
    from voicerouter.resilience.chain import StageRunner, TurnTracker

    # jitter is seeded per session so a seeded replay retries on the same schedule
    rng = random.Random(f"{seed}:{session.session_id}:{stage}") if seed is not None else random.Random()
    return StageRunner(
        stage, members, settings, bus, session=session, strategy=strategy, rng=rng, turn=turn or TurnTracker(bus),
        monitored=lambda member: health.is_monitored(member.state),
    )


def build_stage(
    stage: StagePlan,
    pool: Any,
    policy: ResilienceConfig,
    bus: EventBus,
    *,
    session: SessionInfo,
    faults: FaultPlan | None = None,
) -> Any:
    """An object of the stage's provider protocol (STT/TTS/S2S/call/SMS) over the stage's provider chain."""
    from voicerouter.resilience.carrier import CallChain, SMSChain
    from voicerouter.resilience.chain import Member, TurnTracker
    from voicerouter.resilience.s2s import S2SChain
    from voicerouter.resilience.state import provider_state
    from voicerouter.resilience.stt import STTChain
    from voicerouter.resilience.tts import TTSChain

    settings = StageSettings.resolve(policy, stage.stage)
    turn = TurnTracker(bus, follow_speech=stage.stage in ("stt", "s2s"))
    members: list[Member] = []
    for name in stage.providers:
        try:
            provider = pool.get(name)
        except ProviderError as exc:
            provider = _Unavailable(name, stage.stage, exc.with_context(provider=name, route=session.route))
        if faults:
            provider = faults.wrap(name, provider, turn, on_inject=_announce(bus, name, stage.stage))
        members.append(Member(name, provider, provider_state(name, _config(pool, name), policy.breaker)))
    runner = _runner(stage.stage, members, settings, bus, session, stage.strategy,
                     faults.seed if faults else None, turn)
    chain = {"stt": STTChain, "tts": TTSChain, "s2s": S2SChain, "call": CallChain, "sms": SMSChain}[stage.stage](runner)
    if settings.health.interval_s is not None:
        _start_health(runner, chain)
    return chain


def _announce(bus: EventBus, name: str, stage: str) -> Any:
    """A `fault_injected` event before the failure it causes, so reports never take it for a real one."""

    def emit(fault: Any, turn: int | None) -> None:
        from voicerouter.session.events import EventType

        bus.emit(EventType.FAULT_INJECTED, provider=name, turn=turn, stage=stage, fault=fault.spec, kind=fault.kind)

    return emit


def _start_health(runner: Any, chain: Any) -> None:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # built outside a loop (a dry run): nothing to monitor
    monitors = [m for m in (health.monitor(member.state, member.provider, runner.settings.health)
                            for member in runner.members) if m is not None]
    close = chain.aclose

    async def aclose() -> None:
        for monitor in monitors:
            await health.release(monitor)
        await close()

    chain.aclose = aclose
    chain.health_monitors = monitors


def wrap_agent(
    agent: Any, policy: ResilienceConfig, bus: EventBus, *, session: SessionInfo, fallback_reply: str | None,
    faults: FaultPlan | None = None, configs: list[Any] | None = None,
) -> Any:
    """The agent stage: one agent or an ordered list of them (a chain) behind the `agent` stage policy
    (first-token deadline, stall watchdog, retries, breaker, hedging, faults), with the fallback reply.

    `configs` (the route's agent configs, in the same order) keep two tables' same-named agents apart.
    """
    from voicerouter.resilience.agent import ResilientAgent
    from voicerouter.resilience.chain import Member, TurnTracker
    from voicerouter.resilience.state import provider_state

    agents = list(agent) if isinstance(agent, list | tuple) else [agent]
    settings = StageSettings.resolve(policy, "agent")
    if policy.agent.first_result_timeout_ms is None and len(agents) == 1:
        # one agent and nothing to fail over to: it gets the whole stage budget by default (a shorter
        # first-result deadline would only turn a slow reply into a retry)
        settings = dataclasses.replace(settings, first_result_timeout_s=settings.turn_deadline_s)
    turn = TurnTracker(bus)
    members = []
    for index, each in enumerate(agents):
        name = getattr(each, "name", type(each).__name__)
        config = configs[index] if configs and index < len(configs) else None
        if faults:
            each = faults.wrap(name, each, turn, on_inject=_announce(bus, name, "agent"), kind="agent")
        members.append(Member(name, each, provider_state(f"agent:{name}", config, policy.breaker)))
    runner = _runner("agent", members, settings, bus, session, "failover", faults.seed if faults else None, turn)
    return ResilientAgent(runner, fallback_reply)


def reset() -> None:
    """Forget all process-wide resilience state (breakers, health, latency, capacity counts)."""
    from voicerouter.resilience import capacity, state

    state.reset()
    capacity.reset()
