"""An S2S reply cut mid-way resumes at the first word the caller has not heard: sessions on loopback
emulators whose voice is one tone per word (`tts_engine="words"`), so the test reads back, word by
word, what the sink played. Nothing may be heard twice, no word lost, none cut; for a retry on the
same provider and for a failover to another vendor, whether the new attempt continues the reply
(Realtime, told what was heard) or starts it over (Gemini Live; its repeated words are skipped).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from voicerouter.audio.io import read_audio
from voicerouter.audio.sink import MemorySink
from voicerouter.audio.source import PcmSource
from voicerouter.config.schema import (
    AgentConfig,
    BargeInConfig,
    ProviderConfig,
    ResilienceConfig,
    TurnConfig,
    VadConfig,
)
from voicerouter.providers.base import BuildContext
from voicerouter.providers.openai_realtime import CONTINUE_NOTE
from voicerouter.providers.pool import ProviderPool
from voicerouter.routing.plan import RouteContext, SessionPlan, StagePlan
from voicerouter.session.events import EventType
from voicerouter.session.session import Session
from voicerouter.testing import openai_realtime as realtime_emulator
from voicerouter.testing.server import TONE_S_PER_CHAR, emulate, read_word_tones, word_frequency

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "jfk.flac"
RATE = 16000
KEY = "test-key"
SAID = "what is the weather today"
REPLY = f"You said: {SAID}"
# First reply whole (and the connection's own fault draw), the second reply broken halfway.
SECOND_REPLY = "slow:1ms*2,{fault}*1"



def two_turns() -> bytes:
    pcm = read_audio(FIXTURE).pcm
    quiet = bytes(int(2.0 * RATE) * 2)
    return bytes(int(0.5 * RATE) * 2) + pcm[int(0.2 * RATE) * 2:int(2.5 * RATE) * 2] + quiet + \
        pcm[int(5.3 * RATE) * 2:int(7.9 * RATE) * 2] + quiet


def plan(urls: dict[str, str], chain: tuple[str, ...], instructions: str | None = None) -> SessionPlan:
    providers = {}
    for name, url in urls.items():
        if name.startswith("rt"):
            providers[name] = ProviderConfig(type="openai-realtime", api_key="${KEY}", base_url=url + "/v1")
        else:
            providers[name] = ProviderConfig(type="gemini-live", api_key="${KEY}", base_url=url)
    return SessionPlan(
        context=RouteContext(tenant="t", session_id="resume"), route="r", matched=True, reasons=(),
        pipeline="s2s", stt=None, tts=None, s2s=StagePlan("s2s", chain), vad=VadConfig(), turn=TurnConfig(),
        agent=AgentConfig.model_validate("echo"), resilience=ResilienceConfig(),  # the defaults
        barge_in=BargeInConfig(), instructions=instructions, providers=providers,
    )


async def run(emulators: dict[str, tuple[str, str | None]], chain: tuple[str, ...], instructions: str | None = None,
              voice: str = "words"):
    """Run a two-turn session; `emulators` maps a provider name to (emulator type, its faults)."""
    import contextlib

    async with contextlib.AsyncExitStack() as stack:
        emus = {name: await stack.enter_async_context(
                    emulate(kind, api_key=KEY, transcript=SAID, faults=faults, tts_engine=voice))
                for name, (kind, faults) in emulators.items()}
        the_plan = plan({n: e.url for n, e in emus.items()}, chain, instructions)
        pool = ProviderPool(the_plan.providers, BuildContext(env={"KEY": KEY}))
        sink = MemorySink(RATE)
        try:
            result = await asyncio.wait_for(
                Session(the_plan, pool, PcmSource(two_turns()), sink, env={"KEY": KEY}).run(), 60)
        finally:
            await pool.aclose()
    return result, sink, {n: e.state for n, e in emus.items()}


def assert_heard_once_and_whole(sink: MemorySink, replies: int) -> None:
    """What the caller heard: every word of every reply once, in order, none cut short."""
    vocabulary = REPLY.split()
    assert len({word_frequency(w) for w in vocabulary}) == len(vocabulary)  # the words can be told apart
    heard = read_word_tones(sink.pcm, RATE, vocabulary)
    assert [w for w, _ in heard] == vocabulary * replies
    for word, seconds in heard:
        assert seconds == pytest.approx(TONE_S_PER_CHAR * len(word), abs=0.02), (word, seconds, heard)


def restarts(result) -> list[dict]:
    return [e.data for e in result.events
            if e.type in (EventType.RETRY, EventType.FAILOVER) and e.data.get("restarted_reply")]


@pytest.mark.parametrize("fault", ["drop", "stall"])
async def test_a_retry_on_the_same_realtime_provider_continues_after_the_words_heard(fault):
    result, sink, states = await run({"rt": ("openai-realtime", SECOND_REPLY.format(fault=fault))}, ("rt",),
                                     instructions="Answer briefly.")
    assert [t.reply for t in result.turns] == [REPLY, REPLY] and not result.errors
    assert_heard_once_and_whole(sink, 2)
    (restart,) = restarts(result)
    assert restart["words_heard"] >= 2 and restart["heard_s"] > 0.5  # the caller had heard part of it
    # The new connection was told the words heard, as the assistant's cut-off message, and asked to continue.
    requests = states["rt"].requests
    created = [r["item"] for r in requests if r.get("event") == "conversation.item.create"
               and r["item"]["role"] == "assistant" and r["item"].get("status") == "incomplete"]
    (partial,) = created
    heard = partial["content"][0]["text"]
    assert partial["content"][0]["type"] == "output_text" and REPLY.startswith(heard)
    assert len(heard.split()) == restart["words_heard"]
    (asked,) = [r["response"] for r in requests if r.get("event") == "response.create" and "response" in r]
    assert asked["instructions"] == f"Answer briefly.\n\n{CONTINUE_NOTE}"
    replies = [e.data["text"] for e in result.events if e.type == EventType.AGENT_REPLY]
    assert replies == [REPLY, REPLY]  # the cut words and their continuation, recorded once


async def test_a_realtime_retry_that_starts_over_has_its_repeated_words_skipped(monkeypatch):
    monkeypatch.setattr(realtime_emulator, "CONTINUES_CUT_REPLIES", False)
    result, sink, _ = await run({"rt": ("openai-realtime", SECOND_REPLY.format(fault="drop"))}, ("rt",))
    assert [t.reply for t in result.turns] == [REPLY, REPLY]
    assert_heard_once_and_whole(sink, 2)
    (restart,) = restarts(result)
    assert restart["words_heard"] >= 2


@pytest.mark.parametrize("fault", ["drop", "stall"])
async def test_failover_from_realtime_to_gemini_live_skips_what_gemini_repeats(fault):
    result, sink, states = await run(
        {"rt": ("openai-realtime", SECOND_REPLY.format(fault=fault)), "gem": ("gemini-live", None)}, ("rt", "gem"))
    assert [t.reply for t in result.turns] == [REPLY, REPLY] and not result.errors
    assert [t.tts_provider for t in result.turns] == ["rt", "gem"]
    assert_heard_once_and_whole(sink, 2)
    (restart,) = restarts(result)
    assert restart["to_provider"] == "gem" and restart["words_heard"] >= 2
    # Gemini answered the user's whole turn again (the reply starts over there): its audio was cut at the
    # last word the caller had heard from OpenAI.
    assert [t.transcript for t in result.turns] == [SAID, SAID]


async def test_failover_from_gemini_live_to_realtime_continues_the_reply():
    result, sink, states = await run(
        {"gem": ("gemini-live", SECOND_REPLY.format(fault="drop")), "rt": ("openai-realtime", None)}, ("gem", "rt"))
    assert [t.reply for t in result.turns] == [REPLY, REPLY] and not result.errors
    assert [t.tts_provider for t in result.turns] == ["gem", "rt"]
    assert_heard_once_and_whole(sink, 2)
    continued = [r for r in states["rt"].requests if r.get("event") == "conversation.item.create"
                 and r["item"]["role"] == "assistant"]
    assert continued and REPLY.startswith(continued[-1]["item"]["content"][0]["text"])



# The first reply of the process broken (its voice's speaking rate not learned yet).
FIRST_REPLY = "slow:1ms*1,{fault}*1"


@pytest.mark.parametrize("fault", ["drop", "stall"])
async def test_a_first_reply_cut_before_the_rate_is_learned_is_not_heard_twice_even_without_pauses(fault):
    """One unbroken tone per reply (no word gap to find) at 0.06 s per character, against the default
    estimate of 0.07: no word end is sure, so nothing was passed on when the reply broke halfway, and
    the caller hears each reply exactly once."""
    result, sink, _ = await run({"rt": ("openai-realtime", FIRST_REPLY.format(fault=fault))}, ("rt",), voice="tone")
    assert [t.reply for t in result.turns] == [REPLY, REPLY] and not result.errors
    (restart,) = restarts(result)
    assert restart["words_heard"] == 0
    assert sink.duration_s == pytest.approx(2 * TONE_S_PER_CHAR * len(REPLY), abs=0.005)


@pytest.mark.parametrize("fault", ["drop", "stall"])
async def test_a_first_reply_cut_before_the_rate_is_learned_resumes_at_a_word_gap(fault):
    result, sink, _ = await run({"rt": ("openai-realtime", FIRST_REPLY.format(fault=fault))}, ("rt",))
    assert [t.reply for t in result.turns] == [REPLY, REPLY] and not result.errors
    assert_heard_once_and_whole(sink, 2)
    (restart,) = restarts(result)
    assert restart["words_heard"] >= 2  # word gaps confirmed the word ends heard


async def talk_over(emulators: dict[str, str | None], chain: tuple[str, ...], pause_s: float):
    """A real-time session into a paced sink on Realtime emulators (name -> faults) whose caller
    speaks again `pause_s` after the first turn, over the reply; returns (result, session, states)."""
    import contextlib

    from voicerouter.session.replay import PacedSink

    pcm = read_audio(FIXTURE).pcm
    audio = bytes(int(0.3 * RATE) * 2) + pcm[int(0.2 * RATE) * 2:int(2.5 * RATE) * 2] + \
        bytes(int(pause_s * RATE) * 2) + pcm[int(5.3 * RATE) * 2:int(7.9 * RATE) * 2] + bytes(int(2.5 * RATE) * 2)
    async with contextlib.AsyncExitStack() as stack:
        emus = {name: await stack.enter_async_context(
                    emulate("openai-realtime", api_key=KEY, transcript=SAID, faults=faults, tts_engine="words"))
                for name, faults in emulators.items()}
        the_plan = plan({n: e.url for n, e in emus.items()}, chain)
        pool = ProviderPool(the_plan.providers, BuildContext(env={"KEY": KEY}))
        session = Session(the_plan, pool, PcmSource(audio, realtime=True, tail_silence_ms=700),
                          PacedSink(MemorySink(RATE)), env={"KEY": KEY})
        try:
            result = await asyncio.wait_for(session.run(), 60)
        finally:
            await pool.aclose()
    assert result.turns[0].interrupted and not result.errors
    return result, session, {n: e.state for n, e in emus.items()}


def first_reply_played_s(result) -> float:
    return next(e.data["audio_s_played"] for e in result.events if e.type == EventType.TTS_DONE and e.turn == 1)


async def test_a_barge_in_truncates_the_live_realtime_reply_to_what_was_played():
    """Real-time replay into a paced sink: the caller talks over the first reply. The live Realtime
    connection is told where the playing stopped (conversation.item.truncate at the played audio),
    so the next reply's context holds the words heard, as the session's own conversation does."""
    result, session, states = await talk_over({"rt": None}, ("rt",), 1.6)
    requests = states["rt"].requests
    (cut,) = [r for r in requests if r.get("event") == "conversation.item.truncate"]
    assert cut["content_index"] == 0 and 0 < cut["audio_end_ms"] < 1000 * TONE_S_PER_CHAR * len(REPLY)
    assert abs(cut["audio_end_ms"] - 1000 * first_reply_played_s(result)) <= 2
    context = [r["context"] for r in requests if r.get("event") == "response.create"][1]
    (told,) = [text for role, text in context if role == "assistant"]
    heard = [m.text for m in session.conversation.messages if m.role == "assistant"][0]
    assert told and REPLY.startswith(told) and len(told.split()) < len(REPLY.split())
    # The session keeps whole pieces of text as the chain passed them on (several words at a time),
    # the provider every word whose audio was played: at least the same words.
    assert heard and told.startswith(heard)
    ends, t = [], 0.0
    for word in REPLY.split():
        t += TONE_S_PER_CHAR * len(word)
        ends.append(t)
        t += TONE_S_PER_CHAR
    assert len(told.split()) == sum(1 for end in ends if end * 1000 <= cut["audio_end_ms"] + 1)


async def test_a_barge_in_after_a_resumed_reply_truncates_the_continuation_at_its_own_audio():
    """The first reply breaks halfway on one Realtime provider and goes on at another; the caller then
    talks over the continuation. The connection that carries it is told the played time minus what
    the broken attempt had played (its item holds only the continuation's audio)."""
    result, _, states = await talk_over({"rt-a": "slow:1ms*1,drop*1", "rt-b": None}, ("rt-a", "rt-b"), 2.0)
    (restart,) = restarts(result)
    played_s = first_reply_played_s(result)
    assert played_s > restart["heard_s"]  # the continuation was playing when the caller spoke
    assert not [r for r in states["rt-a"].requests if r.get("event") == "conversation.item.truncate"]
    (cut,) = [r for r in states["rt-b"].requests if r.get("event") == "conversation.item.truncate"]
    assert abs(cut["audio_end_ms"] - 1000 * (played_s - restart["heard_s"])) <= 3
    context = [r["context"] for r in states["rt-b"].requests if r.get("event") == "response.create"][1]
    told = " ".join(text for role, text in context if role == "assistant")
    assert REPLY.startswith(told) and len(told.split()) < len(REPLY.split())
