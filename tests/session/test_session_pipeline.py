"""The session pipeline end to end on real speech, real VAD and turn detection, scripted providers."""

from __future__ import annotations

import asyncio

import pytest
from session_fakes import (
    EchoAgent,
    FakePool,
    FakeS2S,
    FakeSTT,
    FakeTTS,
    make_plan,
    three_turns,
    two_turns,
)

from voicerouter.audio.sink import MemorySink
from voicerouter.audio.source import PcmSource
from voicerouter.config.schema import BargeInConfig, ResilienceConfig
from voicerouter.errors import EXIT_PROVIDER
from voicerouter.providers.base import AudioChunk
from voicerouter.session.events import EventType
from voicerouter.session.session import Session


def types(result) -> list[str]:
    return [str(e.type) for e in result.events]


async def run(pool, audio: bytes, *, plan=None, sink=None, agent=None, realtime=False, lockstep=None, **plan_kw):
    plan = plan or make_plan(pool, **plan_kw)
    sink = sink or MemorySink()
    session = Session(plan, pool, PcmSource(audio, realtime=realtime), sink, agent=agent or EchoAgent(),
                      lockstep=lockstep)
    return await asyncio.wait_for(session.run(), 60), sink


async def test_two_turns_batch_stt_events_and_results():
    stt = FakeSTT("stt-a", ["and so my fellow americans", "what your country can do for you"])
    tts = FakeTTS("tts-a")
    pool = FakePool({"stt-a": stt, "tts-a": tts})
    result, sink = await run(pool, two_turns())

    assert result.exit_code == 0 and result.reason == "end_of_audio"
    assert [t.transcript for t in result.turns] == ["and so my fellow americans", "what your country can do for you"]
    assert [t.reply for t in result.turns] == [
        "You said: and so my fellow americans. Thank you.",
        "You said: what your country can do for you. Thank you.",
    ]
    first, second = result.turns
    # Audio positions: the first utterance is at 0.5-2.8 s, the second at 4.8-7.4 s of the input.
    assert 0.4 < first.start_s < 0.9 and 2.0 < first.end_s < 2.9
    assert 4.7 < second.start_s < 5.3 and 6.5 < second.end_s < 7.5
    assert first.stt_provider == "stt-a" and first.tts_provider == "tts-a"
    assert set(first.wall_latency_ms) == {"turn_end_delay", "stt_final", "agent", "tts_first_audio", "voice_to_voice"}
    assert first.latency_ms["turn_end_delay"] >= 590  # TurnConfig.silence_ms = 600
    # On the audio clock a fast (lockstep) session answers in no time: the reply starts at the turn end.
    assert first.latency_ms == {"turn_end_delay": first.latency_ms["turn_end_delay"], "tts_first_audio": 0.0,
                                "voice_to_voice": first.latency_ms["turn_end_delay"]}
    # Each reply has two sentences, each synthesized on its own, three 0.1 s chunks each.
    assert tts.texts == ["You said: and so my fellow americans.", "Thank you.",
                         "You said: what your country can do for you.", "Thank you."]
    assert sink.duration_s == pytest.approx(1.2, abs=0.01)
    assert first.reply_audio_s == pytest.approx(0.6, abs=0.01)
    # The utterance handed to STT starts with the pre-roll: nothing of the first syllable is lost.
    assert len(stt.audio[0]) / 32000 >= first.end_s - first.start_s + 0.2

    seq = types(result)
    assert seq[0] == "session_start" and seq[-1] == "session_end"
    turn_one = [str(e.type) for e in result.events if e.turn == 1 and e.type != EventType.PROVIDER_USED]
    assert turn_one == ["speech_start", "speech_end", "turn_end", "final_transcript", "agent_reply", "tts_start",
                        "tts_first_audio", "tts_done"]
    used = [(e.data["stage"], e.data.get("provider") or e.provider) for e in result.events
            if e.type == EventType.PROVIDER_USED and e.turn == 1]
    assert ("stt", "stt-a") in used and ("tts", "tts-a") in used
    assert seq.count("speech_start") == seq.count("speech_end") == 2
    assert seq.index("speech_end") < seq.index("turn_end")
    by_type = {}
    for e in result.events:
        by_type.setdefault(str(e.type), []).append(e)
    start = by_type["session_start"][0]
    assert start.data["pipeline"] == "stt_tts" and start.data["stt"] == ["stt-a"] and start.data["tts"] == ["tts-a"]
    assert start.tenant == "acme" and start.route == "test-route" and start.session_id == "test-session"
    turn_end = by_type["turn_end"][0].data
    assert {"reason", "start_s", "end_s", "delay_ms"} <= set(turn_end)
    assert "audio_s" in by_type["speech_start"][0].data
    assert by_type["final_transcript"][0].data["latency_ms"] >= 0
    assert by_type["tts_first_audio"][0].data["latency_ms"] >= 0
    done = by_type["tts_done"][0].data
    assert done["audio_s_out"] == pytest.approx(0.6, abs=0.01) and done["start_audio_s"] is not None
    assert by_type["session_end"][0].data == {"turns": 2, "reason": "end_of_audio"}
    assert result.to_dict()["turns"][0]["transcript"] == "and so my fellow americans"


async def test_streaming_stt_gets_audio_as_spoken_and_partials():
    stt = FakeSTT("stream-stt", ["and so my fellow americans", "what your country"], streaming=True)
    pool = FakePool({"stream-stt": stt, "tts-a": FakeTTS("tts-a")})
    result, _ = await run(pool, two_turns())
    assert [t.transcript for t in result.turns] == ["and so my fellow americans", "what your country"]
    partials = [e for e in result.events if e.type == EventType.PARTIAL_TRANSCRIPT]
    assert partials and all(e.data["text"].startswith("partial") for e in partials)
    assert {e.turn for e in partials} == {1, 2}
    # Every partial of a turn comes before its turn end.
    seq = [(str(e.type), e.turn) for e in result.events]
    assert seq.index(("partial_transcript", 1)) < seq.index(("turn_end", 1))
    assert len(stt.audio[0]) / 32000 > 2.0  # the whole first utterance was streamed


async def test_first_audio_reaches_the_sink_before_synthesis_ends():
    log: list[str] = []

    class LoggingSink(MemorySink):
        async def write(self, chunk):
            log.append("sink")
            await super().write(chunk)

    tts = FakeTTS("tts-a", chunks=4, log=log)
    pool = FakePool({"stt-a": FakeSTT("stt-a", ["hello there"]), "tts-a": tts})
    await run(pool, two_turns(), sink=LoggingSink())
    # audio is passed on word by word (a word still arriving is held back), long before synthesis ends
    assert "sink" in log and log.index("sink") < log.index("tts:3")


async def test_barge_in_clears_the_sink_and_cancels_tts():
    tts = FakeTTS("tts-a", hold={1})  # the first reply never finishes by itself
    pool = FakePool({"stt-a": FakeSTT("stt-a", ["and so my fellow americans", "what your country"]), "tts-a": tts})
    sink = MemorySink()
    result, _ = await run(pool, two_turns(), sink=sink, lockstep=False)

    assert sink.clears >= 1
    assert tts.cancelled >= 1
    barge = [e for e in result.events if e.type == EventType.BARGE_IN]
    assert barge and barge[0].turn == 1 and barge[0].data["speech_ms"] >= 200
    assert result.turns[0].interrupted
    # The interrupting speech became the next turn, captured from its start.
    assert [t.transcript for t in result.turns] == ["and so my fellow americans", "what your country"]
    assert result.turns[1].start_s < barge[0].data["audio_s"]


async def test_barge_in_disabled_keeps_the_reply():
    tts = FakeTTS("tts-a", chunks=2)
    pool = FakePool({"stt-a": FakeSTT("stt-a", ["one", "two"]), "tts-a": tts})
    result, sink = await run(pool, two_turns(), lockstep=False, barge_in=BargeInConfig(enabled=False))
    assert sink.clears == 0 and tts.cancelled == 0
    assert not any(e.type == EventType.BARGE_IN for e in result.events)
    assert [t.reply for t in result.turns] == ["You said: one. Thank you.", "You said: two. Thank you."]


async def test_half_duplex_ignores_speech_while_the_reply_plays():
    tts = FakeTTS("tts-a", hold={1})
    pool = FakePool({"stt-a": FakeSTT("stt-a", ["one", "two"]), "tts-a": tts})
    patient = ResilienceConfig(retries=0, stall_timeout_ms=60000, turn_deadline_ms=60000)
    plan = make_plan(pool, barge_in=BargeInConfig(half_duplex=True), resilience=patient)
    session = Session(plan, pool, PcmSource(two_turns()), MemorySink(), agent=EchoAgent(), lockstep=False)
    task = asyncio.create_task(session.run())
    # The first reply holds the floor (it stalls inside its first word): the second utterance is never heard.
    while not any(e.type == EventType.TTS_START for e in session.bus.history):
        await asyncio.sleep(0.01)
    for _ in range(1000):  # more loop turns than there are frames left
        await asyncio.sleep(0)
    await session.stop()
    result = await asyncio.wait_for(task, 10)
    assert result.reason == "stopped"
    assert [t.transcript for t in result.turns] == ["one"]
    assert sum(1 for e in result.events if e.type == EventType.SPEECH_START) == 1
    assert not any(e.type == EventType.BARGE_IN for e in result.events)


async def test_stt_failure_ends_the_turn_and_the_session_goes_on():
    stt = FakeSTT("stt-a", ["first", "second"], fail_turns={1})
    pool = FakePool({"stt-a": stt, "tts-a": FakeTTS("tts-a")})
    result, _ = await run(pool, two_turns())
    assert result.exit_code == 0
    assert [t.transcript for t in result.turns] == [None, "second"]
    assert result.turns[0].error and "every stt provider failed" in result.turns[0].error
    errors = [e for e in result.events if e.type == EventType.ERROR]
    assert len(errors) == 1 and errors[0].data["stage"] == "stt" and errors[0].turn == 1
    assert errors[0].data["error_type"] == "AllProvidersFailed"
    assert result.errors[0].stage == "stt"


async def test_two_failed_turns_in_a_row_end_the_session_with_exit_code_3():
    stt = FakeSTT("stt-a", ["x"], fail_turns={1, 2, 3})
    pool = FakePool({"stt-a": stt, "tts-a": FakeTTS("tts-a")})
    result, _ = await run(pool, three_turns())
    assert result.reason == "providers_down" and result.exit_code == EXIT_PROVIDER
    assert stt.calls == 2  # the third utterance is not attempted
    assert types(result)[-1] == "session_end"


async def test_tts_failure_reports_an_error_and_keeps_the_transcript():
    pool = FakePool({"stt-a": FakeSTT("stt-a", ["hello"]), "tts-a": FakeTTS("tts-a", fail=True)})
    result, sink = await run(pool, two_turns())
    assert result.turns[0].transcript == "hello" and result.turns[0].reply
    assert {e.data["stage"] for e in result.events if e.type == EventType.ERROR} >= {"tts"}
    assert sink.duration_s == 0
    assert result.reason == "providers_down"  # both turns failed at TTS


async def test_s2s_pipeline_streams_audio_and_reports_transcripts():
    s2s = FakeS2S("rt", [("and so my fellow americans", "Hello there"), ("what your country", "Indeed")])
    pool = FakePool({"rt": s2s})
    result, sink = await run(pool, two_turns(), pipeline="s2s")
    assert [t.transcript for t in result.turns] == ["and so my fellow americans", "what your country"]
    assert [t.reply for t in result.turns] == ["Hello there", "Indeed"]
    assert len(s2s.sessions) == 1 and s2s.sessions[0].instructions == "Be brief."
    committed = s2s.sessions[0].committed
    assert len(committed) == 2 and len(committed[0]) / 32000 > 2.0
    assert sink.duration_s == pytest.approx(0.3, abs=0.01)  # one 0.1 s chunk per reply word, at 24 kHz
    turn_one = [str(e.type) for e in result.events if e.turn == 1 and e.type != EventType.PROVIDER_USED]
    assert turn_one == ["speech_start", "speech_end", "turn_end", "tts_start", "final_transcript", "tts_first_audio",
                        "agent_reply", "tts_done"]
    assert "tts_first_audio" in result.turns[0].latency_ms


async def test_missing_secret_fails_before_any_audio():
    from voicerouter.config.schema import ProviderConfig
    from voicerouter.errors import MissingSecretError

    stt, tts = FakeSTT("stt-a", ["x"]), FakeTTS("tts-a")
    configs = {
        "stt-a": ProviderConfig(type="openai", kind="stt", api_key="${VR_TEST_UNSET_KEY}"),
        "tts-a": ProviderConfig(type="openai-compatible", kind="tts", base_url="http://127.0.0.1:9"),
    }
    pool = FakePool({"stt-a": stt, "tts-a": tts}, configs)
    with pytest.raises(MissingSecretError, match="VR_TEST_UNSET_KEY"):
        await run(pool, two_turns())
    assert stt.calls == 0


async def test_s2s_barge_in_cancels_the_response_and_the_next_turn_is_committed_alone():
    s2s = FakeS2S("rt", [("and so my fellow americans", "A very long answer"), ("what your country", "Sure")],
                  hold={1})
    pool = FakePool({"rt": s2s})
    result, sink = await run(pool, two_turns(), pipeline="s2s", lockstep=False)
    assert sink.clears == 1
    assert [str(e.type) for e in result.events].count("barge_in") == 1
    assert result.turns[0].interrupted and result.turns[1].reply == "Sure"
    assert [t.transcript for t in result.turns] == ["and so my fellow americans", "what your country"]
    # The second turn's audio went to the provider on its own (about 2.6 s), not merged with turn 1's.
    last = [c for session in s2s.sessions for c in session.committed][-1]
    assert 2.0 < len(last) / 32000 < 3.5


async def test_a_turn_without_words_is_not_a_turn():
    pool = FakePool({"stt-a": FakeSTT("stt-a", ["", "what your country"]), "tts-a": FakeTTS("tts-a")})
    result, _ = await run(pool, two_turns())
    assert [(t.index, t.transcript) for t in result.turns] == [(2, "what your country")]
    warnings = [e for e in result.events if e.type == EventType.WARNING and e.turn == 1]
    assert warnings and "no words" in warnings[0].data["message"]
    assert result.exit_code == 0 and not result.errors


async def test_realtime_replay_reply_plays_for_its_duration_so_speech_barges_in():
    from session_fakes import cut, jfk, silence

    from voicerouter.session.replay import PacedSink

    pcm = jfk()
    audio = silence(0.3) + cut(pcm, 0.2, 2.5) + silence(1.0) + cut(pcm, 5.3, 6.6)
    tts = FakeTTS("tts-a", chunks=8)  # 0.8 s of audio per sentence, synthesized at once
    pool = FakePool({"stt-a": FakeSTT("stt-a", ["and so my fellow americans", "what your"]), "tts-a": tts})
    sink = PacedSink(MemorySink())
    session = Session(make_plan(pool), pool, PcmSource(audio, realtime=True, tail_silence_ms=700), sink,
                      agent=EchoAgent())
    assert session.lockstep is False
    result = await asyncio.wait_for(session.run(), 30)
    # Synthesis finished at once, but the reply was still "playing" when the user spoke again.
    barge = [e for e in result.events if e.type == EventType.BARGE_IN]
    assert len(barge) == 1 and barge[0].turn == 1
    assert sink.clears == 1 and result.turns[0].interrupted
    assert [t.transcript for t in result.turns] == ["and so my fellow americans", "what your"]


async def test_s2s_failover_mid_reply_keeps_only_the_fallback_reply_and_one_user_message():
    primary = FakeS2S("rt", [("and so my fellow americans", "Broken answer")], drop=frozenset({1}))
    backup = FakeS2S("rt-backup", [("and so my fellow americans", "Hello there"), ("what your country", "Indeed")])
    pool = FakePool({"rt": primary, "rt-backup": backup})
    plan = make_plan(pool, pipeline="s2s")
    sink = MemorySink()
    session = Session(plan, pool, PcmSource(two_turns()), sink, agent=EchoAgent())
    result = await asyncio.wait_for(session.run(), 60)

    first = result.turns[0]
    assert first.reply == "Hello there"  # not "Broken Hello there": the restarted reply replaces the cut one
    failovers = [e for e in result.events if e.type == EventType.FAILOVER]
    assert failovers and failovers[0].data["restarted_reply"] is True
    users = [m.text for m in session.conversation.messages if m.role == "user"]
    assert users.count("and so my fellow americans") == 1


async def test_session_exports_spans_with_route_attributes():
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    pool = FakePool({"stt-a": FakeSTT("stt-a", ["and so my fellow americans", "what your country"]),
                     "tts-a": FakeTTS("tts-a")})
    session = Session(make_plan(pool), pool, PcmSource(two_turns()), MemorySink(), agent=EchoAgent(),
                      tracer_provider=provider)
    await asyncio.wait_for(session.run(), 60)

    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert names.count("voice.session") == 1 and names.count("voice.turn") == 2
    stt = next(s for s in spans if s.name == "stt")
    assert stt.attributes["voicerouter.route"] == "test-route"
    assert stt.attributes["voicerouter.tenant"] == "acme"
    assert stt.attributes["voicerouter.provider"] == "stt-a"


async def test_s2s_retry_mid_reply_on_the_same_provider_keeps_one_reply():
    """A single provider whose first reply breaks mid-way is retried on a new connection: the reply is
    the retried one alone, never the cut words followed by the whole reply again."""
    rt = FakeS2S("rt", [("and so my fellow americans", "Hello there"), ("and so my fellow americans", "Hello there"),
                        ("what your country", "Indeed")], drop=frozenset({1}))
    pool = FakePool({"rt": rt})
    plan = make_plan(pool, pipeline="s2s", resilience=ResilienceConfig(retries=1))
    session = Session(plan, pool, PcmSource(two_turns()), MemorySink(), agent=EchoAgent())
    result = await asyncio.wait_for(session.run(), 60)

    assert [t.reply for t in result.turns] == ["Hello there", "Indeed"]
    (retry,) = [e for e in result.events if e.type == EventType.RETRY]
    assert retry.data["restarted_reply"] is True
    assistant = [m.text for m in session.conversation.messages if m.role == "assistant"]
    assert assistant == ["Hello there", "Indeed"]


async def test_a_worker_that_swallows_its_cancellation_never_stalls_the_session():
    from voicerouter.session import capture as capture_module
    from voicerouter.session.capture import Capture

    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue  # what asyncio.wait_for on Python 3.11 could do to a cancel

    capture = Capture(index=1, start_s=0.0)
    capture.worker = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    original = capture_module.CANCEL_GRACE_S
    capture_module.CANCEL_GRACE_S = 0.05
    try:
        await asyncio.wait_for(capture.cancel_worker(), 5)  # bounded: returns although the worker lives on
    finally:
        capture_module.CANCEL_GRACE_S = original
    assert not capture.worker.done()
    released.set()
    capture.worker.cancel()
    await asyncio.wait([capture.worker])


class StubbornAgent:
    """Swallows every cancellation until released (a client that catches CancelledError)."""

    name = "stubborn"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.released = asyncio.Event()

    async def reply(self, text, conversation, session) -> str:
        self.started.set()
        while not self.released.is_set():
            try:
                await self.released.wait()
            except asyncio.CancelledError:
                continue
        return "late"

    async def aclose(self) -> None:
        return None


async def test_a_turn_that_swallows_its_cancellation_is_reported_and_never_hangs_the_session(monkeypatch):
    from voicerouter.session import session as session_module

    monkeypatch.setattr(session_module, "CANCEL_GRACE_S", 0.2)
    pool = FakePool({"stt-a": FakeSTT("stt-a", ["and so my fellow americans"]), "tts-a": FakeTTS("tts-a")})
    agent = StubbornAgent()
    session = Session(make_plan(pool), pool, PcmSource(two_turns()), MemorySink(), agent=agent)
    running = asyncio.create_task(session.run())
    await asyncio.wait_for(agent.started.wait(), 30)
    await session.stop()
    try:
        result = await asyncio.wait_for(running, 10)  # bounded, although turn 1's task is still running
        (stuck,) = [e for e in result.events if e.type == EventType.WARNING and e.data.get("reason") == "stuck_task"]
        assert stuck.turn == 1 and "did not stop within 0.2 s" in stuck.data["message"]
        assert result.reason == "stopped"
    finally:
        agent.released.set()
        await asyncio.sleep(0.05)


async def test_s2s_barge_in_keeps_only_the_words_the_caller_heard_in_the_conversation():
    from session_fakes import cut, jfk, silence

    from voicerouter.session.replay import PacedSink

    pcm = jfk()
    audio = silence(0.3) + cut(pcm, 0.2, 2.5) + silence(1.0) + cut(pcm, 5.3, 6.6) + silence(1.0)
    words = " ".join(f"word{i}" for i in range(40))  # 4 s of reply, streamed at once, played in real time
    s2s = FakeS2S("rt", [("and so my fellow americans", words), ("what your country", "Sure")])
    pool = FakePool({"rt": s2s})
    sink = PacedSink(MemorySink())
    session = Session(make_plan(pool, pipeline="s2s"), pool, PcmSource(audio, realtime=True, tail_silence_ms=700),
                      sink, agent=EchoAgent())
    result = await asyncio.wait_for(session.run(), 30)
    assert result.turns[0].interrupted and sink.clears == 1
    assert result.turns[0].reply == words  # what the provider said
    assistant = [m.text for m in session.conversation.messages if m.role == "assistant"]
    heard = assistant[0]
    # what the caller heard before talking over it: a start of the reply, whole words, far from all of it
    assert words.startswith(heard) and 0 < len(heard.split()) < 20 and heard.split()[-1] in words.split()
    (reply_event,) = [e for e in result.events if e.type == EventType.AGENT_REPLY and e.turn == 1]
    assert reply_event.data["heard"] == heard


class StubbornTTS(FakeTTS):
    """Its first reply stops after one chunk and swallows every cancellation until released."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.released = asyncio.Event()

    async def synthesize(self, text: str):
        self.texts.append(text)
        yield AudioChunk(bytes(2 * 2205), 22050)
        while len(self.texts) == 1 and not self.released.is_set():
            try:
                await self.released.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                continue


async def test_a_reply_that_swallows_its_barge_in_is_reported_and_the_next_turn_is_answered(monkeypatch):
    from voicerouter.session import playback

    monkeypatch.setattr(playback, "CANCEL_GRACE_S", 0.2)
    tts = StubbornTTS("tts-a")
    pool = FakePool({"stt-a": FakeSTT("stt-a", ["and so my fellow americans", "what your country"]), "tts-a": tts})
    patient = ResilienceConfig(retries=0, stall_timeout_ms=60000, turn_deadline_ms=60000)
    try:
        result, _ = await run(pool, two_turns(), lockstep=False, resilience=patient)
    finally:
        tts.released.set()
    assert tts.cancelled >= 1 and result.turns[0].interrupted
    (stuck,) = [e for e in result.events if e.data.get("reason") == "stuck_task"]
    assert stuck.turn == 1 and "reply did not stop within 0.2 s" in stuck.data["message"]
    assert result.turns[1].reply == "You said: what your country. Thank you." and result.turns[1].reply_audio_s > 0
