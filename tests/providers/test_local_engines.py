"""The offline engines for real: Piper speaks, PocketSphinx listens, models load once, streams stream."""

from __future__ import annotations

import asyncio
import re
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicerouter.config.schema import ProviderConfig
from voicerouter.errors import ConfigError
from voicerouter.providers.base import AudioChunk, BuildContext, Transcript
from voicerouter.providers.local import EngineMissingError
from voicerouter.providers.local import piper as piper_engine
from voicerouter.providers.local import pocketsphinx as sphinx_engine

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
CTX = BuildContext(env={})


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def recall(said: str, heard: str) -> float:
    """Share of the spoken words that came back (each heard word counts once)."""
    pool = words(heard)
    hits = 0
    for word in words(said):
        if word in pool:
            pool.remove(word)
            hits += 1
    return hits / max(1, len(words(said)))


def read_mono(name: str) -> AudioChunk:
    data, rate = sf.read(SAMPLES / name, dtype="int16", always_2d=True)
    return AudioChunk(data.mean(axis=1).astype("<i2").tobytes(), rate)


def stt(name: str = "local-stt"):
    return sphinx_engine.create(name, "stt", ProviderConfig(type="pocketsphinx"), CTX)


def tts(name: str = "local-tts", **fields):
    return piper_engine.create(name, "tts", ProviderConfig(type="piper", **fields), CTX)


# --- fast: config and packaging errors ----------------------------------------------------------


def test_missing_packages_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # `import pocketsphinx` now fails
    monkeypatch.setitem(sys.modules, "piper", None)
    with pytest.raises(EngineMissingError) as sphinx_info:
        stt()
    with pytest.raises(EngineMissingError) as piper_info:
        tts()
    assert "pip install pocketsphinx" in str(sphinx_info.value)
    assert "pip install piper-tts" in str(piper_info.value)
    assert not sphinx_info.value.retryable  # a missing package cannot fix itself: fail over


def test_config_mistakes_are_config_errors():
    with pytest.raises(ConfigError, match="unknown piper option 'speed'"):
        tts(options={"speed": 2})
    with pytest.raises(ConfigError, match="length_scale must be > 0"):
        tts(options={"length_scale": 0})
    with pytest.raises(ConfigError, match="not bundled"):
        tts(voice="amy")
    with pytest.raises(ConfigError, match="only does tts"):
        piper_engine.create("x", "stt", ProviderConfig(type="piper"), CTX)
    with pytest.raises(ConfigError, match="unknown pocketsphinx option"):
        sphinx_engine.create("x", "stt", ProviderConfig(type="pocketsphinx", options={"beam": 1}), CTX)
    with pytest.raises(ConfigError, match="final_pass must be true or false"):
        sphinx_engine.create("x", "stt", ProviderConfig(type="pocketsphinx", options={"final_pass": "yes"}), CTX)
    with pytest.raises(ConfigError, match="language 'de' is not bundled"):
        sphinx_engine.create("x", "stt", ProviderConfig(type="pocketsphinx", language="de"), CTX)


def test_samples_have_their_documented_formats():
    expected = {
        "hello.wav": (16000, 1), "weather_44k_stereo.wav": (44100, 2),
        "two_turns_8k.wav": (8000, 1), "short_pause_22k.wav": (22050, 1),
    }
    readme = (SAMPLES / "README.md").read_text()
    for name, (rate, channels) in expected.items():
        info = sf.info(SAMPLES / name)
        assert (info.samplerate, info.channels, info.subtype) == (rate, channels, "PCM_16"), name
        assert (SAMPLES / name).stat().st_size < 300_000, name
        assert f"`{name}`" in readme


# --- slow: the engines themselves ---------------------------------------------------------------


@pytest.mark.slow
async def test_round_trip_piper_to_pocketsphinx():
    sentence = "I would like to pay my bill today."
    chunks = [chunk async for chunk in tts().synthesize(sentence)]
    assert chunks and all(c.sample_rate == 22050 for c in chunks)
    audio = AudioChunk(b"".join(c.pcm for c in chunks), 22050)
    assert 1.0 < audio.duration_s < 6.0
    transcript = await stt().transcribe(audio)
    assert transcript.is_final and transcript.provider == "local-stt"
    assert recall(sentence, transcript.text) >= 0.6, transcript.text


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, said",
    [
        ("hello.wav", "Good morning, I would like to check the status of my order."),
        ("weather_44k_stereo.wav", "What is the weather today?"),
        ("two_turns_8k.wav", "My account number is one two three four. I would like to pay my bill today."),
        ("short_pause_22k.wav", "I would like to order a large pizza with cheese."),
    ],
)
async def test_samples_transcribe(name: str, said: str):
    transcript = await stt().transcribe(read_mono(name))
    assert recall(said, transcript.text) >= 0.6, transcript.text


@pytest.mark.slow
async def test_streaming_gives_partials_then_final():
    audio = read_mono("hello.wav")
    partials: list[Transcript] = []
    got_partial = asyncio.Event()

    def on_partial(t: Transcript) -> None:
        partials.append(t)
        got_partial.set()

    stream = await stt().open_stream(audio.sample_rate, on_partial)
    frame = audio.sample_rate * 2 * 30 // 1000  # 30 ms frames, as the pipeline sends them
    half = len(audio.pcm) // 2 // frame * frame
    try:
        for offset in range(0, half, frame):
            await stream.send(audio.pcm[offset : offset + frame])
        # Half the sentence is in: a partial must come before we send the rest (generous guard, not a timing).
        await asyncio.wait_for(got_partial.wait(), timeout=120)
        seen_before_rest = len(partials)
        for offset in range(half, len(audio.pcm), frame):
            await stream.send(audio.pcm[offset : offset + frame])
        final = await stream.finish()
    finally:
        await stream.aclose()
    assert seen_before_rest >= 1
    assert all(not p.is_final and p.text for p in partials)
    assert len({p.text for p in partials}) == len(partials)  # reported only when it changes
    assert final.is_final and final.provider == "local-stt"
    assert recall("Good morning, I would like to check the status of my order.", final.text) >= 0.6, final.text


@pytest.mark.slow
async def test_streaming_resamples_other_rates():
    audio = read_mono("short_pause_22k.wav")
    stream = await stt().open_stream(audio.sample_rate)
    for offset in range(0, len(audio.pcm), 1323 * 2):
        await stream.send(audio.pcm[offset : offset + 1323 * 2])
    final = await stream.finish()
    await stream.aclose()
    assert recall("I would like to order a large pizza with cheese.", final.text) >= 0.6, final.text


@pytest.mark.slow
async def test_final_pass_redecodes_the_whole_utterance():
    audio = read_mono("hello.wav")  # 16 kHz: no resampling, so the stream's audio is exactly the batch's
    engine = sphinx_engine.create(
        "stt-final", "stt", ProviderConfig(type="pocketsphinx", options={"final_pass": True}), CTX
    )
    partials: list[str] = []
    stream = await engine.open_stream(audio.sample_rate, lambda t: partials.append(t.text))
    for offset in range(0, len(audio.pcm), 960):
        await stream.send(audio.pcm[offset : offset + 960])
    final = await stream.finish()
    await stream.aclose()
    batch = await engine.transcribe(audio)
    assert final.text == batch.text  # the final is the batch decode of everything streamed
    assert recall("Good morning, I would like to check the status of my order.", final.text) >= 0.6


@pytest.mark.slow
async def test_a_failing_partial_callback_surfaces_from_finish():
    audio = read_mono("hello.wav")

    called = asyncio.Event()

    def on_partial(t: Transcript) -> None:
        called.set()
        raise ValueError(f"caller bug on {t.text!r}")

    stream = await stt().open_stream(audio.sample_rate, on_partial)
    half = len(audio.pcm) // 2 // 960 * 960
    for offset in range(0, half, 960):
        await stream.send(audio.pcm[offset : offset + 960])
    await asyncio.wait_for(called.wait(), timeout=120)
    with pytest.raises(ValueError, match="caller bug"):
        await stream.send(audio.pcm[half:])  # still accepted: the error belongs to the utterance's result
        await stream.finish()
    await stream.aclose()


@pytest.mark.slow
async def test_abandoned_stream_returns_its_decoder():
    pool = sphinx_engine.pool()
    for _ in range(pool.max_size + 1):  # more streams than decoders: each must give its decoder back
        stream = await stt().open_stream(16000)
        await stream.send(bytes(3200 * 3))
        await stream.aclose()
    transcript = await stt().transcribe(read_mono("hello.wav"))  # would block forever on a leaked pool
    assert "morning" in transcript.text
    assert pool.created <= pool.max_size


@pytest.mark.slow
async def test_piper_streams_sentence_by_sentence():
    text = "Your order has shipped. It will arrive on Tuesday. Is there anything else?"
    gen = tts().synthesize(text)
    first = await gen.__anext__()
    rest = [chunk async for chunk in gen]
    total = first.duration_s + sum(c.duration_s for c in rest)
    assert len(rest) == 2  # one chunk per sentence, the first handed over on its own
    assert first.samples and first.duration_s < total / 2


@pytest.mark.slow
async def test_closing_piper_stream_stops_the_worker():
    engine = tts("barge-in-tts")
    text = " ".join(f"This is sentence number {n} of a long reply." for n in range(1, 13))
    gen = engine.synthesize(text)
    first = await gen.__anext__()
    await gen.aclose()  # barge-in
    for thread in threading.enumerate():
        if thread.name == "piper-barge-in-tts":
            thread.join(timeout=120)
            assert not thread.is_alive()
    assert first.samples
    assert engine.sentences_synthesized < 12  # stopped early, did not render the whole reply


@pytest.mark.slow
async def test_piper_options_and_output_rate():
    normal = [c async for c in tts().synthesize("Thank you for calling.")]
    slow = [c async for c in tts(options={"length_scale": 1.6}, sample_rate=16000).synthesize("Thank you for calling.")]
    assert all(c.sample_rate == 16000 for c in slow)
    normal_s = sum(c.duration_s for c in normal)
    slow_s = sum(c.duration_s for c in slow)
    assert slow_s > normal_s * 1.25  # a larger length_scale speaks more slowly
    assert [c async for c in tts().synthesize("   ")] == []


@pytest.mark.slow
async def test_models_are_loaded_once_and_shared():
    a, b = stt("stt-a"), stt("stt-b")
    assert a.pool is b.pool is sphinx_engine.pool()
    await asyncio.gather(a.transcribe(read_mono("hello.wav")), b.transcribe(read_mono("hello.wav")))
    assert 1 <= a.pool.created <= a.pool.max_size
    created = a.pool.created
    await a.transcribe(read_mono("hello.wav"))
    assert a.pool.created == created  # no new decoder for a later turn

    x, y = tts("tts-x"), tts("tts-y")
    assert x.voice is y.voice is piper_engine.load_voice()
    assert piper_engine.preload() == 0.0  # already loaded: nothing to do


@pytest.mark.slow
async def test_digital_silence_is_no_words():
    assert (await stt().transcribe(AudioChunk(bytes(2 * 16000 * 2), 16000))).text == ""
    assert (await stt().transcribe(AudioChunk(b"", 8000))).text == ""


@pytest.mark.slow
async def test_probes_and_blocking_helpers():
    await stt().probe()
    await tts().probe()
    pcm = piper_engine.synthesize_pcm("What is the weather today?", 16000)
    samples = np.frombuffer(pcm, dtype="<i2")
    assert samples.size > 16000 * 0.5 and np.abs(samples).max() > 1000
    assert recall("what is the weather today", sphinx_engine.transcribe_pcm(pcm, 16000)) >= 0.6


@pytest.mark.slow
@pytest.mark.parametrize("name", ["two_turns_8k.wav", "short_pause_22k.wav"])
async def test_streaming_partials_follow_the_audio_not_the_clock(name: str):
    """`flush()`: the same audio gives the same partials at the same audio positions, whether it is
    sent in 30 ms or 20 ms frames, flushed after each frame or only at the end."""
    audio = read_mono(name)
    piece = int(audio.sample_rate * sphinx_engine.PARTIAL_EVERY_S) * 2

    async def partials(frame_ms: int, flush_each: bool) -> list[tuple[str, int]]:
        seen: list[tuple[str, int]] = []
        stream = await stt().open_stream(audio.sample_rate, lambda t: seen.append((t.text, sent)))
        frame = audio.sample_rate * 2 * frame_ms // 1000
        sent = 0
        try:
            for offset in range(0, len(audio.pcm), frame):
                pcm = audio.pcm[offset : offset + frame]
                await stream.send(pcm)
                sent += len(pcm)
                if flush_each:
                    await stream.flush()
            await stream.flush()
            await stream.finish()
        finally:
            await stream.aclose()
        return seen

    each_30 = await partials(30, True)
    assert len(each_30) >= 3
    # Flushed after every frame, each partial arrives within the frame that completes its piece.
    assert all(sent % piece < audio.sample_rate * 2 * 30 // 1000 or sent // piece > 0 for _, sent in each_30)
    assert [text for text, _ in await partials(20, True)] == [text for text, _ in each_30]
    assert [text for text, _ in await partials(30, False)] == [text for text, _ in each_30]
