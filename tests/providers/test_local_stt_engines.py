"""Whisper and Moonshine for real, on real speech: what they hear, how they stream, how they fail."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from voicerouter.audio.io import read_audio
from voicerouter.config.schema import ProviderConfig
from voicerouter.errors import ConfigError, RequestError
from voicerouter.providers.base import AudioChunk, BuildContext, Transcript
from voicerouter.providers.local import moonshine as moonshine_engine
from voicerouter.providers.local import whisper as whisper_engine
from voicerouter.testing.speech import normalize, phone_line, word_error_rate

pytest.importorskip("faster_whisper")
pytest.importorskip("moonshine_voice")

CTX = BuildContext(env={})
JFK_SAID = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
RATE = 16000


@pytest.fixture(scope="module")
def jfk() -> bytes:
    return read_audio(Path(__file__).resolve().parents[1] / "fixtures" / "jfk.flac").pcm  # 16 kHz mono


def whisper(**options):
    return whisper_engine.create("w", "stt", ProviderConfig(type="whisper", options=options), CTX)


def moonshine(**options):
    return moonshine_engine.create("m", "stt", ProviderConfig(type="moonshine", options=options), CTX)


# --- fast: options and errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beam": 2}, "unknown whisper option"),
        ({"beam_size": 0}, "beam_size"),
        ({"threads": "two"}, "threads"),
        ({"window": "half"}, "window"),
        ({"partials": "pocketsphinx"}, "partials"),
        ({"model_sha256": "0" * 64}, "needs model_path"),
        ({"model_path": "/x", "model_sha256": "abc"}, "64 hex"),
    ],
)
def test_whisper_option_mistakes_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        whisper(**options)


def test_engine_mistakes_are_config_errors():
    with pytest.raises(ConfigError, match="English only"):
        whisper_engine.create("w", "stt", ProviderConfig(type="whisper", language="fr"), CTX)
    with pytest.raises(ConfigError, match="only does stt"):
        whisper_engine.create("w", "tts", ProviderConfig(type="whisper"), CTX)
    with pytest.raises(ConfigError, match="partial_every_ms"):
        moonshine(partial_every_ms=5)
    with pytest.raises(ConfigError, match="unknown moonshine option"):
        moonshine(beam_size=2)
    with pytest.raises(ConfigError, match="not bundled"):
        moonshine_engine.create("m", "stt", ProviderConfig(type="moonshine", language="de"), CTX)


async def test_whisper_without_partials_is_batch_only():
    stt = whisper()
    assert not stt.supports_streaming
    with pytest.raises(RequestError, match="batch only"):
        await stt.open_stream(RATE)
    assert whisper(partials="moonshine").supports_streaming


def test_bundled_model_matches_its_pinned_hash():
    weights = whisper_engine.default_model_path() / "model.bin"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == whisper_engine.BUNDLED_SHA256


async def test_a_model_whose_hash_differs_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for part in whisper_engine.default_model_path().iterdir():
        (model / part.name).symlink_to(part)
    stt = whisper(model_path=str(model), model_sha256="0" * 64)
    with pytest.raises(ConfigError, match="SHA-256"):
        await stt.transcribe(AudioChunk(bytes(RATE), RATE))


async def test_a_missing_model_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no model.bin"):
        await whisper(model_path=str(tmp_path)).transcribe(AudioChunk(bytes(RATE), RATE))
    with pytest.raises(ConfigError, match="lacks"):
        await moonshine(model_path=str(tmp_path)).transcribe(AudioChunk(bytes(RATE), RATE))


def test_word_error_rate():
    assert word_error_rate("My number is one two.", "my number is 1 2") == 0
    assert normalize("fellow-Americans, 42") == ["fellow", "americans", "four", "two"]
    assert word_error_rate("a b c d", "a x c") == pytest.approx(0.5)  # one substitution, one deletion


# --- slow: the engines hear real speech -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("window", ["fit", "full"])
async def test_whisper_hears_real_speech_wideband_and_through_a_phone_line(jfk, window):
    stt = whisper(window=window)
    wide = await stt.transcribe(AudioChunk(jfk, RATE))
    assert word_error_rate(JFK_SAID, wide.text) == 0, wide.text
    narrow = await stt.transcribe(AudioChunk(phone_line(jfk, RATE), 8000))
    assert word_error_rate(JFK_SAID, narrow.text) <= 0.05, narrow.text
    assert wide.provider == "w" and wide.is_final


@pytest.mark.slow
async def test_silence_is_no_words():
    for stt in (whisper(), moonshine()):
        assert (await stt.transcribe(AudioChunk(bytes(2 * RATE), RATE))).text == ""
        await stt.probe()


@pytest.mark.slow
async def test_moonshine_hears_real_speech(jfk):
    heard = await moonshine().transcribe(AudioChunk(jfk, RATE))
    assert word_error_rate(JFK_SAID, heard.text) <= 0.15, heard.text


async def stream_partials(stt, pcm: bytes, rate: int, chunk: int, *, flush_every: int = 1) -> tuple[list[str], str]:
    partials: list[str] = []
    stream = await stt.open_stream(rate, lambda t: partials.append(t.text))
    for n, offset in enumerate(range(0, len(pcm), chunk)):
        await stream.send(pcm[offset : offset + chunk])
        if n % flush_every == 0:
            await stream.flush()
    await stream.flush()
    final = await stream.finish()
    await stream.aclose()
    return partials, final.text


@pytest.mark.slow
async def test_moonshine_partials_depend_on_the_audio_not_on_how_it_arrives(jfk):
    pcm = jfk[: 6 * RATE * 2]
    stt = moonshine()
    by_frames, final = await stream_partials(stt, pcm, RATE, 960)  # 30 ms frames, flushed each
    by_seconds, _ = await stream_partials(stt, pcm, RATE, 32000, flush_every=3)  # 1 s pieces, rare flushes
    assert len(by_frames) >= 4
    assert by_frames == by_seconds
    assert "ask" in normalize(by_frames[-1])  # the last 3 s (the partial window): "ask not what your"
    assert "fellow" in normalize(final)


@pytest.mark.slow
async def test_flush_delivers_every_partial_due(jfk):
    stt = moonshine(partial_every_ms=500)
    partials: list[Transcript] = []
    stream = await stt.open_stream(RATE, partials.append)
    await stream.send(jfk[: int(2.1 * RATE) * 2])  # "And so my fellow Americans": 2.1 s, at least 4 points
    await stream.flush()
    assert partials and all(not p.is_final and p.provider == "m" for p in partials)
    assert "fellow" in normalize(partials[-1].text)  # the partial due at 2.0 s
    # Cut-off audio is not a finished sentence: no partial carries Moonshine's closing ". ? !".
    assert all(p.text[-1] not in ".?!" for p in partials), [p.text for p in partials]
    await stream.aclose()


@pytest.mark.slow
async def test_whisper_streams_moonshine_partials_and_gives_its_own_final(jfk):
    stt = whisper(partials="moonshine")
    pcm8k = phone_line(jfk, RATE)
    partials, final = await stream_partials(stt, pcm8k, 8000, 480)
    assert partials
    assert word_error_rate(JFK_SAID, final) <= 0.05, final


@pytest.mark.slow
async def test_a_failing_partial_callback_surfaces_from_flush(jfk):
    def broken(_: Transcript) -> None:
        raise RuntimeError("callback bug")

    stream = await moonshine().open_stream(RATE, broken)
    await stream.send(jfk[: 2 * RATE * 2])
    with pytest.raises(RuntimeError, match="callback bug"):
        await stream.flush()
    await stream.aclose()


@pytest.mark.slow
async def test_engines_decode_off_the_event_loop(jfk):
    stt = whisper()
    await stt.transcribe(AudioChunk(jfk[:RATE], RATE))  # loaded
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.gather(*(stt.transcribe(AudioChunk(jfk, RATE)) for _ in range(2)))
    task.cancel()
    assert ticks > 0  # the loop kept running while two decodes ran in the engine's threads
    assert whisper_engine.preload(stt.settings) == 0.0  # loaded once, shared


def test_a_decoder_loop_is_recognised():
    assert whisper_engine.repeats("What is the weather today? What is the weather today? What is the weather today")
    assert not whisper_engine.repeats("one two one two")  # too short a run to be a loop
    assert not whisper_engine.repeats(JFK_SAID)


@pytest.mark.slow
async def test_a_short_clip_is_heard_once_not_looped():
    # On a 1.6 s clip with no margin the shortened window loops; the full window is tried instead.
    clip = read_audio(Path(__file__).resolve().parents[2] / "samples" / "weather_44k_stereo.wav").pcm
    heard = await whisper().transcribe(AudioChunk(clip, RATE))
    assert normalize(heard.text) == normalize("What is the weather today?")


@pytest.mark.slow
async def test_the_probe_covers_the_partials_engine(monkeypatch):
    probed: list[str] = []

    async def fake_probe(self) -> None:
        probed.append(self.name)

    monkeypatch.setattr(moonshine_engine.MoonshineSTT, "probe", fake_probe)
    await whisper(partials="moonshine").probe()
    await whisper().probe()
    assert probed == ["w"]
