"""Fault specs: parsing, clear errors, seeded reproducibility, and what each fault does to a provider."""

from __future__ import annotations

import pytest
from resilience_fakes import FakePool, FakeSTT, FakeTTS, providers_of, word_pcm

from voicerouter.config.schema import BackoffConfig, FaultConfig, ResilienceConfig
from voicerouter.errors import AuthError, RateLimitedError, TransientProviderError, UsageError
from voicerouter.providers.base import SessionInfo
from voicerouter.resilience import build_stage, parse_faults
from voicerouter.routing.plan import StagePlan
from voicerouter.session.events import EventBus, EventType

FAST = ResilienceConfig(retries=0, backoff=BackoffConfig(base_ms=5, max_ms=10), first_result_timeout_ms=100,
                        stall_timeout_ms=100, turn_deadline_ms=2000)


def test_parses_the_documented_example():
    plan = parse_faults("dg=error:503@0.3,eleven=hang@turn2,oai-rt=drop_ws@1.5s,local-tts=slow:300ms", seed=7)
    dg, eleven, rt, local = plan.faults
    assert (dg.provider, dg.kind, dg.status, dg.probability) == ("dg", "error", 503, 0.3)
    assert (eleven.kind, eleven.turn) == ("hang", 2)
    assert (rt.kind, rt.at_s, rt.mid_stream) == ("drop_ws", 1.5, True)
    assert (local.kind, local.delay_s) == ("slow", 0.3)
    assert parse_faults("x=error:429:2*3").faults[0].retry_after_s == 2.0
    assert parse_faults("x=error:429:2*3").faults[0].times == 3


def test_table_faults_list():
    plan = parse_faults([FaultConfig(provider="dg", fault="stall@2s")], seed=1)
    assert plan.faults[0].provider == "dg" and plan.faults[0].at_s == 2.0 and plan.seed == 1


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("dg", "'dg'"),
        ("dg=explode", "unknown kind 'explode'"),
        ("dg=error", "needs an HTTP status"),
        ("dg=error:abc", "needs an HTTP status"),
        ("dg=slow", "slow needs a delay"),
        ("dg=slow:fast", "not a duration"),
        ("dg=error:503@1.5", "outside 0..1"),
        ("dg=hang@turnX", "@turnN"),
        ("ok=hang,dg=hang*0", "*0 must be a count"),
    ],
)
def test_bad_specs_name_the_bad_part(spec, needle):
    with pytest.raises(UsageError) as info:
        parse_faults(spec)
    assert needle in str(info.value) and "NAME=KIND" in str(info.value)


def test_probability_draws_are_reproducible_with_a_seed():
    def draws(seed):
        plan = parse_faults("dg=error:503@0.3", seed=seed)
        return [plan.pick("dg", None) is not None for _ in range(50)]

    assert draws(42) == draws(42)
    assert draws(42) != draws(43)
    assert 5 <= sum(draws(42)) <= 25


def test_counted_and_turn_triggers():
    plan = parse_faults("dg=error:500*2,tts=hang@turn3")
    assert [plan.pick("dg", None) is not None for _ in range(3)] == [True, True, False]
    assert plan.pick("tts", 2) is None and plan.pick("tts", 3) is not None


async def test_injected_errors_are_the_typed_errors_of_their_status():
    tts = FakeTTS("eleven")
    for spec, error in (("401", AuthError), ("429:1", RateLimitedError), ("503", TransientProviderError)):
        wrapped = parse_faults(f"eleven=error:{spec}").wrap("eleven", tts)
        with pytest.raises(error) as info:
            async for _ in wrapped.synthesize("hi"):
                pass
        assert "injected fault" in str(info.value)
    limited = parse_faults("eleven=error:429:1").wrap("eleven", tts)
    with pytest.raises(RateLimitedError) as info:
        async for _ in limited.synthesize("hi"):
            pass
    assert info.value.retry_after == 1.0


def chain(pool, names, spec, stage="tts", seed=0):
    bus = EventBus("s1", route="r1")
    faults = parse_faults(spec, seed=seed)
    built = build_stage(StagePlan(stage, tuple(names)), pool, FAST, bus, session=SessionInfo("s1", route="r1"),
                        faults=faults)
    return built, bus, faults


async def test_hang_on_turn_two_only_through_the_chain():
    primary, backup = FakeTTS("eleven"), FakeTTS("piper")
    stage, bus, _ = chain(FakePool(primary, backup), ["eleven", "piper"], "eleven=hang@turn2")
    used = []
    for turn in (1, 2, 3):
        bus.emit(EventType.TURN_END, turn=turn, reason="silence")
        used.append([name async for c in stage.synthesize("Hi.") for name in providers_of(c)][0])
    assert used == ["eleven", "piper", "eleven"]
    (failover,) = [e for e in bus.history if e.type == EventType.FAILOVER]
    assert failover.turn == 2


async def test_drop_after_seconds_of_streamed_audio_in_an_stt_stream():
    primary, backup = FakeSTT("dg"), FakeSTT("oai")
    stage, bus, faults = chain(FakePool(primary, backup), ["dg", "oai"], "dg=drop_ws@0.0005s", stage="stt")
    stream = await stage.open_stream(16000)
    for word in "ask not what your country can do".split():
        await stream.send(word_pcm(word))
    final = await stream.finish()
    assert final.text == "ask not what your country can do" and final.provider == "oai"
    assert 0 < len(primary.streams[0].received) < 7  # the fault cut the primary mid-utterance
    assert faults.injected == [("dg", "dg=drop_ws@0.0005s", None)]


async def test_slow_delays_the_first_result_past_the_deadline():
    primary, backup = FakeTTS("eleven"), FakeTTS("piper")
    stage, bus, _ = chain(FakePool(primary, backup), ["eleven", "piper"], "eleven=slow:300ms")
    assert [name async for c in stage.synthesize("Hi.") for name in providers_of(c)][0] == "piper"


async def test_stall_mid_sentence_restarts_it():
    primary, backup = FakeTTS("eleven"), FakeTTS("piper")
    stage, bus, _ = chain(FakePool(primary, backup), ["eleven", "piper"], "eleven=stall")
    # the stalled provider's partial word is never passed on: the fallback speaks the sentence once
    assert [name async for c in stage.synthesize("Hi.") for name in providers_of(c)] == ["piper", "piper", "piper"]


def test_check_names_an_unknown_provider():
    plan = parse_faults("dg=hang,typo=error:500")
    parse_faults("dg=hang").check(["dg", "eleven"])
    with pytest.raises(UsageError, match="unknown provider 'typo'"):
        plan.check(["dg", "eleven"])
