"""STT chain: no lost words when a stream drops mid-utterance or goes silent at the end."""

from __future__ import annotations

import pytest
from resilience_fakes import FakePool, FakeSTT, word_pcm, words_of

from voicerouter.config.schema import BackoffConfig, ResilienceConfig
from voicerouter.errors import AllProvidersFailed
from voicerouter.providers.base import AudioChunk, SessionInfo, Transcript
from voicerouter.resilience import build_stage
from voicerouter.routing.plan import StagePlan
from voicerouter.session.events import EventBus, EventType

FAST = ResilienceConfig(retries=1, backoff=BackoffConfig(base_ms=5, max_ms=10), first_result_timeout_ms=100,
                        stall_timeout_ms=100, turn_deadline_ms=2000)
WORDS = "and so my fellow americans ask not what your country can do for you".split()


def chain(pool: FakePool, names: tuple[str, ...], policy: ResilienceConfig = FAST):
    bus = EventBus("s1", route="r1")
    return build_stage(StagePlan("stt", names), pool, policy, bus, session=SessionInfo("s1", route="r1")), bus


def events(bus: EventBus, kind: EventType) -> list[dict]:
    return [e.to_dict() for e in bus.history if e.type == kind]


async def utter(stage, words=WORDS, partials: list[Transcript] | None = None) -> Transcript:
    stream = await stage.open_stream(16000, on_partial=partials.append if partials is not None else None)
    try:
        for word in words:
            await stream.send(word_pcm(word))
        return await stream.finish()
    finally:
        await stream.aclose()


async def test_stream_dropping_mid_utterance_replays_the_whole_buffer_to_the_fallback():
    primary, backup = FakeSTT("dg", script=["drop:5"]), FakeSTT("oai")
    stage, bus = chain(FakePool(primary, backup), ("dg", "oai"))
    partials: list[Transcript] = []
    final = await utter(stage, partials=partials)
    assert final.text == " ".join(WORDS) and final.provider == "oai"
    # replayed from the start, in a few large frames rather than one per word
    assert words_of(backup.streams[0].received[:1]).split()[:5] == WORDS[:5]
    (failover,) = events(bus, EventType.FAILOVER)
    assert failover["from_provider"] == "dg" and failover["to_provider"] == "oai"
    assert failover["replayed_audio_s"] > 0 and failover["restarted"] is True
    assert partials[-1].provider == "oai" and partials[-1].text == " ".join(WORDS)


async def test_stream_that_goes_silent_at_finish_falls_back_with_all_the_audio():
    primary, backup = FakeSTT("dg", script=["hang_finish"]), FakeSTT("batch", supports_streaming=False)
    stage, bus = chain(FakePool(primary, backup), ("dg", "batch"))
    final = await utter(stage)
    assert final.text == " ".join(WORDS) and final.provider == "batch"
    assert backup.batches == [" ".join(WORDS)]
    assert primary.cancelled == 1
    # the live final is late: at half the first-result deadline the fallback gets the buffer too
    (hedge,) = events(bus, EventType.HEDGE)
    assert hedge["primary"] == "dg" and hedge["winner"] == "batch" and hedge["hedge_after_ms"] == 50
    assert not events(bus, EventType.FAILOVER)


async def test_a_live_final_that_comes_after_the_hedge_still_wins_if_it_is_first():
    primary, backup = FakeSTT("dg", script=["slow_finish:0.08"]), FakeSTT("oai", script=["open_slow:1"])
    stage, bus = chain(FakePool(primary, backup), ("dg", "oai"))
    final = await utter(stage)
    assert final.provider == "dg" and final.text == " ".join(WORDS)
    (hedge,) = events(bus, EventType.HEDGE)
    assert hedge["winner"] == "dg" and backup.calls == 1


async def test_retry_of_a_stream_replays_the_buffer_to_a_new_stream_of_the_same_provider():
    primary = FakeSTT("dg", script=["ok", "ok"])
    stage, bus = chain(FakePool(primary), ("dg",))
    stream = await stage.open_stream(16000)
    for word in WORDS[:3]:
        await stream.send(word_pcm(word))
    primary.streams[0].step = "hang_finish"  # the only provider hangs: time out, then retry it
    final = await stream.finish()
    assert final.text == " ".join(WORDS[:3]) and len(primary.streams) == 2
    assert events(bus, EventType.RETRY)[0]["reason"] == "timeout"


async def test_open_failure_moves_to_the_next_streaming_provider():
    primary, backup = FakeSTT("dg", script=["auth"]), FakeSTT("oai")
    stage, bus = chain(FakePool(primary, backup), ("dg", "oai"))
    final = await utter(stage)
    assert final.provider == "oai" and final.text == " ".join(WORDS)
    (failover,) = events(bus, EventType.FAILOVER)
    assert failover["reason"] == "auth" and failover["restarted"] is False


async def test_batch_transcribe_fails_over():
    primary, backup = FakeSTT("a", script=["error:500", "error:500"]), FakeSTT("b")
    stage, bus = chain(FakePool(primary, backup), ("a", "b"))
    audio = AudioChunk(b"".join(word_pcm(w) for w in WORDS[:4]), 16000)
    result = await stage.transcribe(audio)
    assert result.text == " ".join(WORDS[:4]) and result.provider == "b"


async def test_all_stt_providers_down():
    primary, backup = FakeSTT("a", script=["drop:1", "hang_finish"]), FakeSTT("b", script=["auth"])
    stage, bus = chain(FakePool(primary, backup), ("a", "b"))
    with pytest.raises(AllProvidersFailed) as info:
        await utter(stage)
    assert "a:" in str(info.value) and "b: HTTP 401" in str(info.value)


async def test_members_whose_stream_broke_are_retried_by_replay_at_finish():
    # the primary drops mid-utterance and the only other provider refuses the stream once:
    # at finish the buffer is replayed, so the utterance is still transcribed in full
    primary, backup = FakeSTT("dg", script=["drop:3"]), FakeSTT("dg2", script=["error:503"])
    stage, bus = chain(FakePool(primary, backup), ("dg", "dg2"))
    final = await utter(stage)
    assert final.text == " ".join(WORDS)
    assert final.provider in ("dg", "dg2")


async def test_hedged_finish_replays_the_buffer_to_the_next_provider_and_keeps_the_faster():
    from voicerouter.config.schema import StagePolicy

    policy = FAST.model_copy(update={"stt": StagePolicy(hedge_after_ms=20, first_result_timeout_ms=2000)})
    primary, backup = FakeSTT("dg", script=["hang_finish"]), FakeSTT("batch", supports_streaming=False)
    stage, bus = chain(FakePool(primary, backup), ("dg", "batch"), policy)
    final = await utter(stage)
    assert final.text == " ".join(WORDS) and final.provider == "batch"
    (hedge,) = events(bus, EventType.HEDGE)
    assert hedge["primary"] == "dg" and hedge["winner"] == "batch"
    assert primary.cancelled == 1 and not events(bus, EventType.FAILOVER)


async def test_provider_that_cannot_be_built_is_failed_over():
    from voicerouter.errors import MissingSecretError

    class BrokenPool(FakePool):
        def get(self, name):
            if name == "dg":
                raise MissingSecretError("DG_KEY is not set")
            return super().get(name)

    backup = FakeSTT("oai")
    stage, bus = chain(BrokenPool(FakeSTT("dg"), backup), ("dg", "oai"))
    final = await utter(stage, WORDS[:2])
    assert final.provider == "oai"
    assert events(bus, EventType.FAILOVER)[0]["reason"] == "missing_secret"


async def test_the_table_order_wins_over_streaming():
    batch, streaming = FakeSTT("oai", supports_streaming=False), FakeSTT("dg")
    stage, bus = chain(FakePool(batch, streaming), ("oai", "dg"))
    final = await utter(stage, WORDS[:4])
    assert final.provider == "oai" and batch.batches == [" ".join(WORDS[:4])] and not streaming.streams


async def test_single_provider_stream_drop_is_retried_by_replaying_the_buffer():
    only = FakeSTT("dg", script=["drop:4"])
    stage, bus = chain(FakePool(only), ("dg",))
    final = await utter(stage)
    assert final.text == " ".join(WORDS) and final.provider == "dg" and len(only.streams) == 2
    assert events(bus, EventType.RETRY)[0]["provider"] == "dg"


async def test_failover_at_connect_reports_dead_air_from_when_the_caller_started_waiting():
    """The primary's connect hangs (100 ms deadline), the fallback takes 50 ms to connect: the caller
    waited for both, so the failover's elapsed_ms covers both, not just the fallback's connect."""
    primary, backup = FakeSTT("dg", script=["open_hang"]), FakeSTT("oai", script=["open_slow:0.05"])
    stage, bus = chain(FakePool(primary, backup), ("dg", "oai"))
    final = await utter(stage)
    assert final.provider == "oai" and final.text == " ".join(WORDS)
    (failover,) = events(bus, EventType.FAILOVER)
    assert failover["reason"] == "timeout" and failover["elapsed_ms"] >= 145


@pytest.mark.parametrize("unreachable", ["open_hang", "refused"])
async def test_finish_never_circles_back_to_a_provider_that_was_never_reachable(unreachable: str):
    """The primary never answered its connect; the fallback's final transcript is slow but comes: the
    fallback is the last provider (the rest of the turn deadline), not cut short to try the primary again."""
    primary = FakeSTT("dg", script=[unreachable if unreachable != "refused" else "open_refused"])
    backup = FakeSTT("oai", script=["slow_finish:0.3"])

    if unreachable == "refused":
        async def refused(sample_rate=16000, on_partial=None):
            primary.calls += 1
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9)")
        primary.open_stream = refused  # type: ignore[method-assign]
    stage, bus = chain(FakePool(primary, backup), ("dg", "oai"))
    final = await utter(stage)
    assert final.provider == "oai" and final.text == " ".join(WORDS)
    assert primary.calls == 1  # one connect attempt: never a replay to a provider that never answered
    assert [e["to_provider"] for e in events(bus, EventType.FAILOVER)] == ["oai"]


async def test_a_live_stream_that_keeps_losing_the_final_hedge_opens_its_breaker():
    """A hung primary whose finals the fallback always beats counts as failed, so after three turns
    it is skipped instead of raced on every turn."""
    primary, backup = FakeSTT("dg", script=["hang_finish"] * 3), FakeSTT("oai")
    stage, bus = chain(FakePool(primary, backup), ("dg", "oai"))
    for _ in range(4):
        assert (await utter(stage, WORDS[:3])).provider == "oai"
    assert len(events(bus, EventType.HEDGE)) == 3
    assert [e["state"] for e in events(bus, EventType.BREAKER)] == ["open"]
    assert primary.calls == 3  # the fourth utterance goes straight to the fallback
