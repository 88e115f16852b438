"""TTS over WebSockets (Cartesia contexts, ElevenLabs stream-input, Deepgram speak) against their emulators:
text streamed in as it comes, cancel on barge-in, typed failures, failover that re-speaks the sentence."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest
from wire import sdk_calls

from voicerouter.config.schema import BackoffConfig, ProviderConfig, ResilienceConfig
from voicerouter.errors import AuthError, ConfigError, RateLimitedError, TransientProviderError
from voicerouter.providers.base import BuildContext, SessionInfo
from voicerouter.providers.pool import ProviderPool
from voicerouter.providers.registry import get_type
from voicerouter.resilience import build_stage
from voicerouter.routing.plan import StagePlan
from voicerouter.session.events import EventBus, EventType
from voicerouter.testing import emulate
from voicerouter.testing.server import Fault

KEY = "sk-socket-tts-canary-77"
VENDORS = ("cartesia", "elevenlabs", "deepgram")
SENTENCE = "Hello there, how are you today?"
EMULATED_S_PER_CHAR = 0.06  # the emulators' tone lasts this long per character of text


def config(vendor: str, url: str, **options) -> ProviderConfig:
    return ProviderConfig(type=vendor, kind="tts", api_key="${TTS_KEY}", base_url=url,
                          options={"transport": "websocket", **options})


def make(vendor: str, url: str, key: str = KEY, **options):
    return get_type(vendor).build("ws", "tts", config(vendor, url, **options), BuildContext(env={"TTS_KEY": key}))


async def words(text: str, pause_s: float = 0.0) -> AsyncIterator[str]:
    """Agent text as an LLM streams it: a word (with its space) at a time."""
    parts = text.split(" ")
    for index, word in enumerate(parts):
        await asyncio.sleep(pause_s)
        yield word + (" " if index < len(parts) - 1 else "")


def seconds(chunks) -> float:
    return sum(c.duration_s for c in chunks)


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_sentence_over_the_socket(vendor: str) -> None:
    async with emulate(vendor, api_key=KEY) as emu:
        async with aclosing(make(vendor, emu.url)) as tts:
            first = [c async for c in tts.synthesize(SENTENCE)]
            second = [c async for c in tts.synthesize("Fine, thanks.")]
    assert seconds(first) == pytest.approx(EMULATED_S_PER_CHAR * len(SENTENCE), abs=0.15)
    assert seconds(second) == pytest.approx(EMULATED_S_PER_CHAR * len("Fine, thanks."), abs=0.15)
    assert all(len(c.pcm) % 2 == 0 and c.sample_rate == tts.sample_rate for c in first)
    sockets = [r for r in emu.state.requests if r.get("websocket")]
    if vendor == "elevenlabs":
        assert len(sockets) == 2  # stream-input: one socket per generation
        assert [m["text"] for m in sockets[0]["messages"]][0] == " " and sockets[0]["messages"][-1] == {"text": ""}
    else:
        assert len(sockets) == 1  # Cartesia multiplexes contexts; Deepgram's idle socket is reused
    if vendor == "cartesia":
        contexts = {m["context_id"] for m in sockets[0]["messages"]}
        assert len(contexts) == 2 and sockets[0]["headers"]["Authorization"] == f"Bearer {KEY}"
        # Word timestamps ride on the audio (for a failover to resume at the first unheard word).
        words = [w for c in first for w in c.words]
        assert [w for w, _, _ in words] == SENTENCE.split()
        assert all(a < b for _, a, b in words) and words[-1][2] == pytest.approx(seconds(first), abs=0.01)
    if vendor == "deepgram":
        assert [m["type"] for m in sockets[0]["messages"]] == ["Speak", "Flush", "Speak", "Flush"]


@pytest.mark.parametrize("vendor", VENDORS)
async def test_streamed_text_goes_out_as_it_comes(vendor: str) -> None:
    text = "Sure. I can help with that today."
    async with emulate(vendor, api_key=KEY) as emu:
        async with aclosing(make(vendor, emu.url)) as tts:
            chunks = [c async for c in tts.synthesize_stream(words(text))]
    assert seconds(chunks) == pytest.approx(EMULATED_S_PER_CHAR * len(text), abs=0.15)
    messages = [r for r in emu.state.requests if r.get("websocket")][0]["messages"]
    if vendor == "cartesia":  # continuations, one context, ended by an empty transcript with continue false
        assert [m["continue"] for m in messages] == [True] * 7 + [False]
        assert "".join(m["transcript"] for m in messages) == text and len({m["context_id"] for m in messages}) == 1
    if vendor == "elevenlabs":  # a piece per word, flush at the sentence end, closed with empty text
        assert messages[1] == {"text": "Sure. ", "flush": True} and messages[-1] == {"text": ""}
    if vendor == "deepgram":  # Flush after each sentence, so the first is spoken before the second is typed
        kinds = [m["type"] for m in messages]
        assert kinds.count("Flush") == 2 and kinds.index("Flush") == 1


@pytest.mark.parametrize("vendor", VENDORS)
async def test_barge_in_cancels_the_generation(vendor: str) -> None:
    async with emulate(vendor, api_key=KEY) as emu:
        async with aclosing(make(vendor, emu.url)) as tts:
            stream = tts.synthesize("A long answer that keeps going on and on for quite a while, sentence after sentence.")
            await anext(stream)
            await stream.aclose()  # the caller stops listening
            after = [c async for c in tts.synthesize("Next.")]  # the provider is still usable
    assert seconds(after) == pytest.approx(EMULATED_S_PER_CHAR * len("Next."), abs=0.15)
    first = [r for r in emu.state.requests if r.get("websocket")][0]["messages"]
    if vendor == "cartesia":
        assert {"context_id": first[0]["context_id"], "cancel": True} in first
    if vendor == "deepgram":
        assert first[-1] == {"type": "Clear"}


@pytest.mark.parametrize("vendor", VENDORS)
async def test_wrong_key_is_an_auth_error_without_the_key(vendor: str) -> None:
    async with emulate(vendor, api_key="the-right-key") as emu:
        tts = make(vendor, emu.url)
        with pytest.raises(AuthError) as info:
            [c async for c in tts.synthesize(SENTENCE)]
        await tts.aclose()
    assert KEY not in str(info.value) and info.value.provider == "ws"


@pytest.mark.parametrize("vendor", VENDORS)
async def test_dropped_socket_mid_audio_is_transient(vendor: str) -> None:
    async with emulate(vendor, api_key=KEY, faults="drop*1") as emu:
        tts = make(vendor, emu.url)
        got = []
        with pytest.raises(TransientProviderError):
            async for chunk in tts.synthesize(SENTENCE):
                got.append(chunk)
        again = [c async for c in tts.synthesize("Still here.")]  # a new socket after the drop
        await tts.aclose()
    assert got and again


async def test_cartesia_context_error_is_typed_and_the_socket_lives_on() -> None:
    async with emulate("cartesia", api_key=KEY) as emu:
        async with aclosing(make("cartesia", emu.url)) as tts:
            assert [c async for c in tts.synthesize("Warm up.")]
            emu.state.faults.append(Fault.parse("error:429*1"))
            with pytest.raises(RateLimitedError) as info:
                [c async for c in tts.synthesize(SENTENCE)]
            assert [c async for c in tts.synthesize("Again.")]
    assert "concurrency_limited" in str(info.value)
    assert len([r for r in emu.state.requests if r.get("websocket")]) == 1


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        make("cartesia", "http://127.0.0.1:9", transport="grpc")
    with pytest.raises(ConfigError):
        make("elevenlabs", "http://127.0.0.1:9", chunk_length_schedule=[10])


async def test_a_sentence_broken_in_flight_is_finished_by_the_fallback() -> None:
    policy = ResilienceConfig(retries=0, backoff=BackoffConfig(base_ms=5, max_ms=10), first_result_timeout_ms=2000,
                              stall_timeout_ms=1000, turn_deadline_ms=8000)
    async with emulate("cartesia", api_key=KEY, faults="drop") as primary, emulate("deepgram", api_key=KEY) as backup:
        pool = ProviderPool({"cart": config("cartesia", primary.url), "dg": config("deepgram", backup.url)},
                            BuildContext(env={"TTS_KEY": KEY}))
        bus = EventBus("s1", route="r1")
        tts = build_stage(StagePlan("tts", ("cart", "dg")), pool, policy, bus, session=SessionInfo("s1", route="r1"))
        try:
            chunks = [c async for c in tts.synthesize(SENTENCE)]
        finally:
            await pool.aclose()
    (failover,) = [e.to_dict() for e in bus.history if e.type == EventType.FAILOVER]
    assert failover["from_provider"] == "cart" and failover["to_provider"] == "dg"
    assert failover["restarted_sentence"]
    # The fallback speaks the sentence from the first word not yet heard: heard + rest = the sentence.
    (speak,) = [m for m in [r for r in backup.state.requests if r.get("websocket")][0]["messages"]
                if m["type"] == "Speak"]
    heard = " ".join(SENTENCE.split()[: failover["resumed_at_word"]])
    assert speak["text"] and " ".join(filter(None, [heard, speak["text"]])) == SENTENCE
    assert seconds(chunks) >= EMULATED_S_PER_CHAR * len(speak["text"])


def needs(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"{module} SDK not installed")


@needs("cartesia")
async def test_cartesia_sdk_websocket_context_on_the_emulator() -> None:
    async with emulate("cartesia", api_key=KEY) as emu:
        audio = await sdk_calls.cartesia_tts_websocket(emu.url, KEY)
    assert len(audio) == 2 * int(EMULATED_S_PER_CHAR * len("Hello there, ") * 24000) + 2 * int(
        EMULATED_S_PER_CHAR * len("how are you today?") * 24000)


@needs("elevenlabs")
async def test_elevenlabs_sdk_convert_realtime_on_the_emulator() -> None:
    async with emulate("elevenlabs", api_key=KEY) as emu:
        audio = await sdk_calls.elevenlabs_stream_input(emu.url, KEY)
    import io

    import soundfile as sf

    assert sf.info(io.BytesIO(audio)).format == "MP3"  # the SDK's default output_format, mp3_44100_128


@needs("deepgram")
async def test_deepgram_sdk_speak_socket_on_the_emulator() -> None:
    async with emulate("deepgram", api_key=KEY) as emu:
        received = await sdk_calls.deepgram_speak_live(emu.url, KEY)
    audio = b"".join(m for m in received if isinstance(m, bytes))
    assert len(audio) == 2 * int(EMULATED_S_PER_CHAR * len(sdk_calls.TEXT) * 24000)
    assert getattr(received[-1], "type", None) == "Flushed"


@pytest.mark.parametrize("vendor", ["elevenlabs", "deepgram"])
async def test_clause_flush_speaks_at_the_first_comma(vendor: str) -> None:
    text = "Sure, I can help with that."
    async with emulate(vendor, api_key=KEY) as emu:
        async with aclosing(make(vendor, emu.url, flush="clause")) as tts:
            chunks = [c async for c in tts.synthesize_stream(words(text))]
    assert seconds(chunks) == pytest.approx(EMULATED_S_PER_CHAR * len(text), abs=0.15)
    messages = [r for r in emu.state.requests if r.get("websocket")][0]["messages"]
    if vendor == "elevenlabs":
        assert messages[1] == {"text": "Sure, ", "flush": True}
    else:
        assert [m["type"] for m in messages][:2] == ["Speak", "Flush"] and messages[0]["text"] == "Sure, "
    with pytest.raises(ConfigError):
        make(vendor, emu.url, flush="word")
