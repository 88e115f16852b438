"""Hedging, load balancing, capacity admission, health checks and the agent fallback."""

from __future__ import annotations

import asyncio

import pytest
from resilience_fakes import FakeAgent, FakePool, FakeTTS, providers_of

from voicerouter.config.schema import (
    AgentConfig,
    BackoffConfig,
    BargeInConfig,
    BreakerConfig,
    HealthConfig,
    ProviderConfig,
    ResilienceConfig,
    StagePolicy,
    TurnConfig,
    VadConfig,
)
from voicerouter.errors import AllProvidersFailed, CapacityError
from voicerouter.providers.base import Conversation, SessionInfo
from voicerouter.resilience import SessionAdmission, build_stage, wrap_agent
from voicerouter.routing.plan import RouteContext, SessionPlan, StagePlan
from voicerouter.session.events import EventBus, EventType

FAST = ResilienceConfig(retries=1, backoff=BackoffConfig(base_ms=5, max_ms=10), first_result_timeout_ms=300,
                        stall_timeout_ms=300, turn_deadline_ms=2000)


def chain(pool, names, policy=FAST, strategy="failover", session="s1"):
    bus = EventBus(session, route="r1")
    plan = StagePlan("tts", tuple(names), strategy=strategy)
    return build_stage(plan, pool, policy, bus, session=SessionInfo(session, route="r1")), bus


def events(bus: EventBus, kind: EventType) -> list[dict]:
    return [e.to_dict() for e in bus.history if e.type == kind]


async def speak(stage, text="Hi.") -> list[str]:
    return [name async for c in stage.synthesize(text) for name in providers_of(c)]


async def test_hedge_uses_the_faster_provider_and_cancels_the_slower():
    slow, fast = FakeTTS("slow", script=["hang"]), FakeTTS("fast")
    policy = FAST.model_copy(update={"tts": StagePolicy(hedge_after_ms=20)})
    stage, bus = chain(FakePool(slow, fast), ["slow", "fast"], policy)
    assert await speak(stage) == ["fast"] * 3
    assert slow.cancelled == 1  # the loser saw cancellation
    (hedge,) = events(bus, EventType.HEDGE)
    assert hedge["primary"] == "slow" and hedge["secondary"] == "fast" and hedge["winner"] == "fast"
    assert not events(bus, EventType.FAILOVER)


async def test_hedge_keeps_the_primary_when_it_answers_first():
    primary, secondary = FakeTTS("primary", script=["slow:0.05"]), FakeTTS("secondary", script=["hang"])
    policy = FAST.model_copy(update={"tts": StagePolicy(hedge_after_ms=10)})
    stage, bus = chain(FakePool(primary, secondary), ["primary", "secondary"], policy)
    assert await speak(stage) == ["primary"] * 3
    assert events(bus, EventType.HEDGE)[0]["winner"] == "primary" and secondary.cancelled == 1


async def test_no_hedge_when_the_primary_is_quick():
    primary, secondary = FakeTTS("primary"), FakeTTS("secondary")
    policy = FAST.model_copy(update={"hedge_after_ms": 200})
    stage, bus = chain(FakePool(primary, secondary), ["primary", "secondary"], policy)
    assert await speak(stage) == ["primary"] * 3
    assert secondary.calls == 0 and not events(bus, EventType.HEDGE)


async def test_round_robin_rotates_sessions_and_still_fails_over():
    a, b, c = FakeTTS("a"), FakeTTS("b"), FakeTTS("c")
    pool = FakePool(a, b, c)
    firsts = []
    for i in range(4):
        stage, _ = chain(pool, ["a", "b", "c"], strategy="round_robin", session=f"s{i}")
        firsts.append((await speak(stage))[0])
    assert firsts == ["a", "b", "c", "a"]
    b.script = ["auth"]
    stage, bus = chain(pool, ["a", "b", "c"], strategy="round_robin", session="s5")  # starts at b
    assert (await speak(stage))[0] == "c"
    assert events(bus, EventType.FAILOVER)[0]["from_provider"] == "b"


async def test_least_latency_prefers_the_provider_with_the_fastest_first_result():
    slow, quick = FakeTTS("slow", script=["slow:0.05"] * 10), FakeTTS("quick", script=["slow:0.01"] * 10)
    stage, bus = chain(FakePool(slow, quick), ["slow", "quick"], strategy="least_latency")
    used = [(await speak(stage))[0] for _ in range(4)]
    assert used[:2] == ["slow", "quick"]  # each untried provider is measured once
    assert used[2:] == ["quick", "quick"]
    quick.script = ["auth"]
    assert (await speak(stage))[0] == "slow"  # still fails over


def plan(providers: dict[str, ProviderConfig], tts: tuple[str, ...], *, route_limit=None, session="s1"):
    return SessionPlan(
        context=RouteContext(session_id=session), route="r1", matched=True, reasons=(), pipeline="stt_tts",
        stt=None, tts=StagePlan("tts", tts), s2s=None, vad=VadConfig(), turn=TurnConfig(), agent=AgentConfig(),
        resilience=FAST.model_copy(update={"max_concurrent_sessions": route_limit}), barge_in=BargeInConfig(),
        instructions=None, providers=providers,
    )


async def test_capacity_uses_the_next_provider_then_refuses_with_a_clear_message():
    pool = FakePool(FakeTTS("eleven"), FakeTTS("piper"), limits={"eleven": 1, "piper": 1})
    configs = {name: pool.config(name) for name in ("eleven", "piper")}
    bus1, bus3 = EventBus("s1"), EventBus("s3")
    async with SessionAdmission(plan(configs, ("eleven", "piper"), session="s1"), bus1) as first:
        assert first.picked["tts"] == "eleven"
        async with SessionAdmission(plan(configs, ("eleven", "piper"), session="s2")) as second:
            assert second.picked["tts"] == "piper"
            # the second session's chain skips the full provider and uses its own
            stage, bus = chain(pool, ["eleven", "piper"], session="s2")
            assert (await speak(stage))[0] == "piper"
            with pytest.raises(CapacityError) as info:
                async with SessionAdmission(plan(configs, ("eleven", "piper"), session="s3"), bus3):
                    pass
            assert "no tts provider has room" in str(info.value) and "eleven (1/1)" in str(info.value)
            assert info.value.exit_code == 3
            (refused,) = events(bus3, EventType.REFUSED)
            assert refused["stage"] == "tts" and refused["error_type"] == "CapacityError"
    async with SessionAdmission(plan(configs, ("eleven", "piper"), session="s4")) as again:
        assert again.picked["tts"] == "eleven"  # slots were released


async def test_route_capacity_refuses_the_extra_session():
    configs = {"piper": ProviderConfig(type="piper")}
    async with SessionAdmission(plan(configs, ("piper",), route_limit=1, session="a")):
        with pytest.raises(CapacityError, match="route 'r1' is at its limit of 1"):
            await SessionAdmission(plan(configs, ("piper",), route_limit=1, session="b")).__aenter__()
    async with SessionAdmission(plan(configs, ("piper",), route_limit=1, session="c")):
        pass


async def test_health_probe_marks_unhealthy_then_recovery_brings_the_preferred_provider_back():
    primary, backup = FakeTTS("eleven"), FakeTTS("piper")
    primary.probe_ok = False
    policy = FAST.model_copy(update={"health": HealthConfig(interval_s=0.01, timeout_ms=100)})
    stage, bus = chain(FakePool(primary, backup), ["eleven", "piper"], policy)
    for _ in range(50):
        if events(bus, EventType.HEALTH):
            break
        await asyncio.sleep(0.01)
    assert events(bus, EventType.HEALTH)[0]["healthy"] is False
    assert (await speak(stage))[0] == "piper" and primary.calls == 0  # skipped while unhealthy
    primary.probe_ok = True
    for _ in range(50):
        if len(events(bus, EventType.HEALTH)) > 1:
            break
        await asyncio.sleep(0.01)
    assert events(bus, EventType.HEALTH)[1]["healthy"] is True
    assert (await speak(stage))[0] == "eleven"
    await stage.aclose()


async def test_agent_failure_speaks_the_fallback_reply():
    agent = FakeAgent(["error:500", "error:500"])
    bus = EventBus("s1", route="r1")
    wrapped = wrap_agent(agent, FAST, bus, session=SessionInfo("s1"), fallback_reply="Sorry, one moment.")
    assert await wrapped.reply("hi", Conversation(), SessionInfo("s1")) == "Sorry, one moment."
    (failover,) = events(bus, EventType.FAILOVER)
    assert failover["stage"] == "agent" and failover["to_provider"] == "fallback_reply"
    assert await wrapped.reply("hi", Conversation(), SessionInfo("s1")) == "you said hi"


async def test_agent_failure_without_fallback_raises():
    agent = FakeAgent(["auth"])
    wrapped = wrap_agent(agent, FAST, EventBus("s1"), session=SessionInfo("s1"), fallback_reply=None)
    with pytest.raises(AllProvidersFailed, match="every agent provider failed"):
        await wrapped.reply("hi", Conversation(), SessionInfo("s1"))


def test_breaker_failure_rate_over_window():
    from voicerouter.resilience.breaker import CircuitBreaker

    now = [0.0]
    breaker = CircuitBreaker(BreakerConfig(failures=4, failure_rate=0.5, window=4, cooldown_s=10), clock=lambda: now[0])
    for ok in (True, False, True, False):
        breaker.record_success() if ok else breaker.record_failure("x")
    assert breaker.state == "open"  # 2 of 4 failed, never 4 in a row
    assert not breaker.allow()
    now[0] = 10.0
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow()  # one probe at a time
    breaker.release_probe()
    assert breaker.allow()


async def test_successful_health_probe_half_opens_a_breaker_tripped_by_an_auth_error():
    primary, backup = FakeTTS("eleven", script=["auth"]), FakeTTS("piper")
    primary.probe_ok = False
    policy = FAST.model_copy(update={"health": HealthConfig(interval_s=0.01, timeout_ms=100),
                                     "breaker": BreakerConfig(failures=3, cooldown_s=3600)})
    stage, bus = chain(FakePool(primary, backup), ["eleven", "piper"], policy)
    assert (await speak(stage))[0] == "piper"
    assert events(bus, EventType.BREAKER)[-1]["state"] == "open"
    primary.probe_ok = True  # the key was fixed
    for _ in range(100):
        if any(e["healthy"] for e in events(bus, EventType.HEALTH)):
            break
        await asyncio.sleep(0.01)
    assert (await speak(stage))[0] == "eleven"  # long before the hour of cooldown
    assert [e["state"] for e in events(bus, EventType.BREAKER)] == ["open", "half_open", "closed"]
    await stage.aclose()
