"""TTS chain: hangs, mid-sentence drops, rate limits, auth failures, breakers and total failure."""

from __future__ import annotations

import asyncio

import pytest
from resilience_fakes import FakePool, FakeTTS, providers_of, voiced_chars

from voicerouter.config.schema import BackoffConfig, BreakerConfig, ResilienceConfig, StagePolicy
from voicerouter.errors import AllProvidersFailed
from voicerouter.providers.base import SessionInfo
from voicerouter.resilience import build_stage
from voicerouter.routing.plan import StagePlan
from voicerouter.session.events import EventBus, EventType

FAST = ResilienceConfig(
    retries=1,
    backoff=BackoffConfig(base_ms=5, max_ms=10),
    first_result_timeout_ms=100,
    stall_timeout_ms=100,
    turn_deadline_ms=2000,
    breaker=BreakerConfig(failures=3, cooldown_s=30),
)


def chain(pool: FakePool, names: tuple[str, ...], policy: ResilienceConfig = FAST, session: str = "s1"):
    bus = EventBus(session, route="r1")
    info = SessionInfo(session, route="r1")
    stage = build_stage(StagePlan("tts", names), pool, policy, bus, session=info)
    return stage, bus


def events(bus: EventBus, kind: EventType) -> list[dict]:
    return [e.to_dict() for e in bus.history if e.type == kind]


async def speak(stage, text: str = "Hello there.") -> list[str]:
    return [name async for chunk in stage.synthesize(text) for name in providers_of(chunk)]


async def test_hanging_primary_fails_over_to_next_provider():
    primary, backup = FakeTTS("eleven", script=["hang"]), FakeTTS("piper")
    stage, bus = chain(FakePool(primary, backup), ("eleven", "piper"))
    assert await speak(stage) == ["piper"] * 3
    (failover,) = events(bus, EventType.FAILOVER)
    assert failover["from_provider"] == "eleven" and failover["to_provider"] == "piper"
    assert failover["reason"] == "timeout" and "no first result" in failover["error"]
    assert failover["route"] == "r1" and "elapsed_ms" in failover
    assert primary.cancelled == 1 and primary.calls == 1  # a timeout fails over at once, no retry
    assert events(bus, EventType.PROVIDER_USED)[-1]["provider"] == "piper"


async def test_mid_sentence_drop_restarts_the_whole_sentence_on_the_next_provider():
    primary, backup = FakeTTS("eleven", script=["drop:2"]), FakeTTS("piper")
    stage, bus = chain(FakePool(primary, backup), ("eleven", "piper"))
    # the broken stream never finished its first word: nothing of it was passed on, all is re-spoken
    assert await speak(stage, "One whole sentence.") == ["piper", "piper", "piper"]
    assert backup.texts == ["One whole sentence."]
    (failover,) = events(bus, EventType.FAILOVER)
    assert failover["restarted_sentence"] is True


async def test_stall_between_chunks_is_caught():
    primary, backup = FakeTTS("eleven", script=["stall"]), FakeTTS("piper")
    stage, bus = chain(FakePool(primary, backup), ("eleven", "piper"))
    assert await speak(stage) == ["piper", "piper", "piper"]
    (failover,) = events(bus, EventType.FAILOVER)
    assert "stalled" in failover["error"] and failover["restarted_sentence"] is True


async def test_transient_error_is_retried_with_backoff_on_the_same_provider():
    primary, backup = FakeTTS("eleven", script=["error:503"]), FakeTTS("piper")
    stage, bus = chain(FakePool(primary, backup), ("eleven", "piper"))
    assert await speak(stage) == ["eleven"] * 3
    (retry,) = events(bus, EventType.RETRY)
    assert retry["provider"] == "eleven" and retry["attempt"] == 2 and retry["reason"] == "transient"
    assert 0 <= retry["delay_ms"] <= 10 and retry["elapsed_ms"] >= 0 and retry["route"] == "r1"
    assert not events(bus, EventType.FAILOVER) and backup.calls == 0


async def test_retries_exhausted_then_failover():
    primary, backup = FakeTTS("eleven", script=["error:503", "error:502"]), FakeTTS("piper")
    stage, bus = chain(FakePool(primary, backup), ("eleven", "piper"))
    assert await speak(stage) == ["piper"] * 3
    assert primary.calls == 2 and len(events(bus, EventType.RETRY)) == 1
    assert events(bus, EventType.FAILOVER)[0]["error"] == "HTTP 502"


async def test_rate_limit_with_a_fallback_fails_over_at_once_and_remembers_the_retry_after():
    """Waiting out Retry-After while a healthy fallback exists is dead air: fail over now, and skip
    the limited provider (every session) until its Retry-After has passed."""
    primary, backup = FakeTTS("eleven", script=["ratelimit:0.2"]), FakeTTS("piper")
    pool = FakePool(primary, backup)
    stage, bus = chain(pool, ("eleven", "piper"))
    assert await speak(stage) == ["piper"] * 3
    assert not events(bus, EventType.RETRY) and primary.calls == 1
    assert events(bus, EventType.FAILOVER)[0]["reason"] == "rate_limited"
    other, _ = chain(pool, ("eleven", "piper"), session="s2")
    assert await speak(other) == ["piper"] * 3 and primary.calls == 1  # still inside the Retry-After
    await asyncio.sleep(0.25)
    assert await speak(stage) == ["eleven"] * 3  # after it, the preferred provider again


async def test_rate_limit_retry_after_is_honoured_when_no_fallback_is_left():
    primary = FakeTTS("eleven", script=["ratelimit:0.05"])
    stage, bus = chain(FakePool(primary), ("eleven",))
    assert await speak(stage) == ["eleven"] * 3
    (retry,) = events(bus, EventType.RETRY)
    assert retry["delay_ms"] == 50 and retry["why"] == "retry_after" and retry["reason"] == "rate_limited"


async def test_rate_limit_retry_after_beyond_the_deadline_fails_over_at_once():
    primary, backup = FakeTTS("eleven", script=["ratelimit:30"]), FakeTTS("piper")
    stage, bus = chain(FakePool(primary, backup), ("eleven", "piper"))
    assert await speak(stage) == ["piper"] * 3
    assert not events(bus, EventType.RETRY) and primary.calls == 1
    assert events(bus, EventType.FAILOVER)[0]["reason"] == "rate_limited"


async def test_auth_error_is_not_retried_opens_breaker_and_later_sessions_skip_it():
    primary, backup = FakeTTS("eleven", script=["auth"]), FakeTTS("piper")
    pool = FakePool(primary, backup)
    stage, bus = chain(pool, ("eleven", "piper"))
    assert await speak(stage) == ["piper"] * 3
    assert primary.calls == 1 and not events(bus, EventType.RETRY)
    (breaker,) = events(bus, EventType.BREAKER)
    assert breaker["provider"] == "eleven" and breaker["state"] == "open" and breaker["previous"] == "closed"
    assert events(bus, EventType.HEALTH)[0]["healthy"] is False

    from voicerouter.resilience import snapshot

    status = snapshot()
    assert status["eleven"]["breaker"] == "open" and status["eleven"]["healthy"] is False
    assert status["eleven"]["last_error"] == "HTTP 401: bad key" and status["piper"]["breaker"] == "closed"

    later, later_bus = chain(pool, ("eleven", "piper"), session="s2")
    assert await speak(later) == ["piper"] * 3
    assert primary.calls == 1  # skipped while open: no request reached it
    assert not events(later_bus, EventType.FAILOVER)


async def test_breaker_opens_after_consecutive_failures_then_half_open_probe_closes_it():
    policy = FAST.model_copy(update={"retries": 0, "breaker": BreakerConfig(failures=2, cooldown_s=0.05)})
    primary, backup = FakeTTS("eleven", script=["error:503", "error:503"]), FakeTTS("piper")
    stage, bus = chain(FakePool(primary, backup), ("eleven", "piper"), policy)
    await speak(stage)
    await speak(stage)
    assert [e["state"] for e in events(bus, EventType.BREAKER)] == ["open"]
    assert await speak(stage) == ["piper"] * 3 and primary.calls == 2  # open: skipped
    await asyncio.sleep(0.06)  # cooldown
    assert await speak(stage) == ["eleven"] * 3  # the half-open probe succeeded
    assert [e["state"] for e in events(bus, EventType.BREAKER)] == ["open", "half_open", "closed"]


async def test_failed_half_open_probe_reopens():
    policy = FAST.model_copy(update={"retries": 0, "breaker": BreakerConfig(failures=1, cooldown_s=0.05)})
    primary, backup = FakeTTS("eleven", script=["error:503", "error:500"]), FakeTTS("piper")
    stage, bus = chain(FakePool(primary, backup), ("eleven", "piper"), policy)
    await speak(stage)
    await asyncio.sleep(0.06)
    assert await speak(stage) == ["piper"] * 3
    assert [e["state"] for e in events(bus, EventType.BREAKER)] == ["open", "half_open", "open"]


async def test_every_provider_down_names_each_error():
    a, b = FakeTTS("eleven", script=["auth"]), FakeTTS("cartesia", script=["hang", "hang"])
    stage, bus = chain(FakePool(a, b), ("eleven", "cartesia"), FAST.model_copy(update={"turn_deadline_ms": 300}))
    with pytest.raises(AllProvidersFailed) as info:
        await speak(stage)
    message = str(info.value)
    assert "every tts provider failed" in message
    assert "eleven: HTTP 401: bad key" in message and "cartesia: no first result within" in message
    assert info.value.route == "r1" and info.value.session_id == "s1"


async def test_the_last_provider_on_its_last_attempt_may_use_the_rest_of_the_turn_deadline():
    # slower than the first-result deadline, but nothing is left to fail over to: wait rather than fail
    policy = FAST.model_copy(update={"retries": 0})
    only = FakeTTS("piper", script=["slow:0.2"])
    stage, bus = chain(FakePool(only), ("piper",), policy)
    assert await speak(stage) == ["piper"] * 3
    backup = FakeTTS("local")
    first = FakeTTS("eleven", script=["slow:0.2"])
    stage, bus = chain(FakePool(first, backup), ("eleven", "local"), policy, session="s2")
    assert await speak(stage) == ["local"] * 3  # with a fallback, the deadline still applies


async def test_turn_deadline_bounds_retries():
    policy = FAST.model_copy(update={"retries": 5, "tts": StagePolicy(turn_deadline_ms=150)})
    primary = FakeTTS("eleven", script=["hang"] * 6)
    stage, bus = chain(FakePool(primary), ("eleven",), policy)
    with pytest.raises(AllProvidersFailed):
        await speak(stage)
    assert primary.calls <= 2  # 100 ms first-result timeout, then the 150 ms stage budget is gone


async def test_stage_override_inherits_unset_fields():
    from voicerouter.resilience.policy import StageSettings

    policy = FAST.model_copy(update={"tts": StagePolicy(first_result_timeout_ms=250)})
    settings = StageSettings.resolve(policy, "tts")
    assert settings.first_result_timeout_s == 0.25 and settings.stall_timeout_s == 0.1 and settings.retries == 1
    assert StageSettings.resolve(policy, "stt").first_result_timeout_s == 0.1


async def test_single_provider_mid_sentence_drop_restarts_the_sentence_on_it():
    only = FakeTTS("piper", script=["drop:1"])
    stage, bus = chain(FakePool(only), ("piper",))
    assert await speak(stage) == ["piper"] * 3  # the cut first word was held back, so it is spoken once
    (retry,) = events(bus, EventType.RETRY)
    assert retry["restarted_sentence"] is True and retry["provider"] == "piper"
    assert only.texts == ["Hello there.", "Hello there."]


async def test_caller_stopping_mid_sentence_closes_the_provider_stream_at_once():
    import contextlib

    primary = FakeTTS("eleven", chunks=5)
    stage, bus = chain(FakePool(primary), ("eleven",))
    async with contextlib.aclosing(stage.synthesize("A long sentence.")) as audio:
        await anext(audio)  # barge-in after the first chunk
    assert primary.closed_early == 1  # closed now, not left to garbage collection
    assert not events(bus, EventType.FAILOVER) and not events(bus, EventType.BREAKER)


async def test_breaker_never_closes_without_a_half_open_probe_under_8_concurrent_sessions():
    """Half the primary's calls fail with 503, the others succeed slowly: a success of a call that was
    in flight when the breaker opened must not close it (no open -> closed, only half_open -> closed)."""
    primary, backup = FakeTTS("eleven", script=["slow:0.03", "error:503"] * 40), FakeTTS("piper")
    pool = FakePool(primary, backup)
    policy = FAST.model_copy(update={"retries": 0, "breaker": BreakerConfig(failures=2, cooldown_s=0.05)})
    chains = [chain(pool, ("eleven", "piper"), policy, session=f"s{i}") for i in range(8)]

    async def session(stage) -> list[str]:
        spoken: list[str] = []
        for _ in range(6):
            spoken += await speak(stage)
            await asyncio.sleep(0.01)
        return spoken

    spoken = await asyncio.gather(*(session(stage) for stage, _ in chains))
    assert all(len(s) == 18 for s in spoken)  # every sentence spoken whole, by one provider or the other
    transitions = [e for _, bus in chains for e in events(bus, EventType.BREAKER)]
    assert any(e["state"] == "open" for e in transitions)
    closes = [e for e in transitions if e["state"] == "closed"]
    assert all(e["previous"] == "half_open" and e["reason"] == "probe succeeded" for e in closes), closes


async def test_breaker_opens_on_a_provider_that_always_fails_mid_stream():
    """Every stream breaks after its first chunk: that is a failure, so the breaker opens after
    `failures` sentences and the rest go straight to the fallback."""
    primary, backup = FakeTTS("eleven", script=["drop:1"] * 12), FakeTTS("piper")
    policy = FAST.model_copy(update={"retries": 0})
    stage, bus = chain(FakePool(primary, backup), ("eleven", "piper"), policy)
    for _ in range(6):
        await speak(stage)
    assert primary.calls == 3  # failures=3, then skipped
    (opened,) = [e for e in events(bus, EventType.BREAKER) if e["state"] == "open"]
    assert opened["provider"] == "eleven"


@pytest.mark.parametrize("aligned", [False, True], ids=["estimated", "vendor-alignment"])
async def test_a_sentence_broken_mid_way_resumes_at_the_first_unheard_word(aligned: bool):
    """Audio follows the text (0.07 s per character, silence for spaces): the broken provider's
    complete words are heard once, the fallback speaks only the rest, no word is cut or repeated
    (word ends estimated from the audio, or given by the vendor's alignment)."""
    text = "One two three four five six seven eight."
    primary = FakeTTS("eleven", script=["drop:10"], speech=True, aligned=aligned)
    backup = FakeTTS("piper", speech=True)
    stage, bus = chain(FakePool(primary, backup), ("eleven", "piper"))
    chunks = [chunk async for chunk in stage.synthesize(text)]
    pcm = b"".join(c.pcm for c in chunks)
    (rest,) = backup.texts
    assert text.endswith(rest) and rest != text and rest.split()[0] in text.split()  # resumed at a word
    heard = text[: len(text) - len(rest)]
    assert voiced_chars(pcm) == sum(1 for ch in text if ch != " ")  # every letter once: none lost, none twice
    assert sum(voiced_chars(c.pcm) for c in chunks if b"eleven" in c.pcm) == sum(1 for ch in heard if ch != " ")
    (failover,) = events(bus, EventType.FAILOVER)
    assert failover["restarted_sentence"] is True and failover["resumed_at_word"] == len(heard.split())


class LocalTTS(FakeTTS):
    runs_locally = True  # a CPU-bound engine in this process


async def test_a_slow_local_engine_as_last_resort_has_no_first_result_deadline_and_says_the_machine_is_busy():
    engine = LocalTTS("piper", script=["slow:0.3"])
    stage, bus = chain(FakePool(engine), ("piper",))
    assert await speak(stage) == ["piper"] * 3 and engine.calls == 1  # no timeout, no retry queued behind it
    (warning,) = [e for e in events(bus, EventType.WARNING) if e.get("reason") == "machine_busy"]
    assert warning["provider"] == "piper" and "not a provider outage" in warning["message"]
    assert not events(bus, EventType.BREAKER) and not events(bus, EventType.RETRY)


async def test_a_local_engine_missing_its_deadline_fails_over_without_counting_as_an_outage():
    engine, cloud = LocalTTS("piper", script=["slow:0.3"] * 5), FakeTTS("eleven")
    stage, bus = chain(FakePool(engine, cloud), ("piper", "eleven"))
    for _ in range(5):
        assert await speak(stage) == ["eleven"] * 3
    assert len([e for e in events(bus, EventType.WARNING) if e.get("reason") == "machine_busy"]) == 5
    assert not events(bus, EventType.BREAKER)  # five timeouts, and the breaker (failures=3) never opened


async def test_a_primary_much_slower_than_its_fallback_is_demoted_for_a_cooldown():
    primary, backup = FakeTTS("eleven", script=["slow:0.3"] * 20), FakeTTS("piper")
    pool = FakePool(primary, backup)
    patient = FAST.model_copy(update={"first_result_timeout_ms": 1000})
    warm, _ = chain(pool, ("piper",), patient, session="warm")
    for _ in range(5):
        await speak(warm)  # the fallback's usual pace is known (fast)
    stage, bus = chain(pool, ("eleven", "piper"), patient)
    for _ in range(5):
        assert await speak(stage) == ["eleven"] * 3  # slow, but within the deadline
    assert await speak(stage) == ["piper"] * 3 and primary.calls == 5  # demoted: the fallback goes first
    (demoted,) = [e for e in events(bus, EventType.WARNING) if e.get("reason") == "latency_outlier"]
    assert demoted["provider"] == "eleven" and demoted["p50_ms"] > demoted["next_p50_ms"] + 250
    assert demoted["demoted_s"] == 30


async def test_auto_hedging_waits_for_the_providers_own_p90_and_keeps_within_its_budget():
    primary, backup = FakeTTS("eleven", script=["ok"] * 9 + ["hang"] * 11), FakeTTS("piper")
    policy = FAST.model_copy(update={"hedge_after_ms": "auto", "first_result_timeout_ms": 1000})
    stage, bus = chain(FakePool(primary, backup), ("eleven", "piper"), policy)
    for _ in range(9):
        assert await speak(stage) == ["eleven"] * 3  # no hedge: its pace is being learned, then it is quick
    assert await speak(stage) == ["piper"] * 3  # it hangs: raced after its own p90, long before 1000 ms
    (hedge,) = events(bus, EventType.HEDGE)
    assert hedge["winner"] == "piper" and hedge["hedge_after_ms"] < 100
    assert await speak(stage) == ["piper"] * 3  # hangs again: over budget (1 hedge in 11 calls), a plain timeout
    assert len(events(bus, EventType.HEDGE)) == 1 and events(bus, EventType.FAILOVER)[-1]["reason"] == "timeout"
