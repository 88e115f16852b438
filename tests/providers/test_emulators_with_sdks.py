"""Each emulator accepts the official SDK's plain call (its defaults included) and answers what the SDK parses."""

from __future__ import annotations

import importlib.util
import io

import pytest
import soundfile as sf
from wire import sdk_calls

from voicerouter.testing import emulate

KEY = "sk-emulated-sdk-0001"
SAID = "hello from the emulator"


def needs(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"{module} SDK not installed")


def audio_format(data: bytes) -> tuple[str, int]:
    info = sf.info(io.BytesIO(data))
    return info.format, info.frames


@pytest.mark.parametrize("vendor, call", [
    pytest.param("openai", sdk_calls.openai_transcription, marks=needs("openai"), id="openai"),
    pytest.param("deepgram", sdk_calls.deepgram_listen_file, marks=needs("deepgram"), id="deepgram-file"),
    pytest.param("deepgram", sdk_calls.deepgram_listen_raw, marks=needs("deepgram"), id="deepgram-raw-linear16"),
    pytest.param("elevenlabs", sdk_calls.elevenlabs_stt, marks=needs("elevenlabs"), id="elevenlabs"),
])
async def test_sdk_transcription_reads_the_emulators_transcript(vendor: str, call) -> None:
    async with emulate(vendor, api_key=KEY, transcript=SAID) as emu:
        assert await call(emu.url, KEY) == SAID


@needs("openai")
async def test_openai_speech_default_mp3() -> None:
    async with emulate("openai", api_key=KEY) as emu:
        audio = await sdk_calls.openai_speech(emu.url, KEY)
    fmt, frames = audio_format(audio)
    assert fmt == "MP3" and frames > 24000


@needs("openai")
async def test_openai_realtime_turn() -> None:
    async with emulate("openai-realtime", api_key=KEY, transcript=SAID) as emu:
        seen = await sdk_calls.openai_realtime(emu.url, KEY)
    assert seen[-1] == "response.done" and "response.output_audio.delta" in seen
    assert "conversation.item.input_audio_transcription.completed" not in seen  # not asked for in session.update


@needs("deepgram")
async def test_deepgram_live_listen() -> None:
    async with emulate("deepgram", api_key=KEY, transcript=SAID) as emu:
        messages = await sdk_calls.deepgram_listen_live(emu.url, KEY)
    finals = [m for m in messages if getattr(m, "type", None) == "Results" and m.is_final]
    assert finals and " ".join(m.channel.alternatives[0].transcript for m in finals).strip() == SAID
    assert getattr(messages[-1], "type", None) == "Metadata"


@needs("deepgram")
async def test_deepgram_speak_default() -> None:
    async with emulate("deepgram", api_key=KEY) as emu:
        audio = await sdk_calls.deepgram_speak(emu.url, KEY)
    fmt, frames = audio_format(audio)
    assert fmt == "WAV" and frames == int(0.06 * len(sdk_calls.TEXT) * 24000)


@needs("elevenlabs")
async def test_elevenlabs_tts_default_mp3() -> None:
    async with emulate("elevenlabs", api_key=KEY) as emu:
        audio = await sdk_calls.elevenlabs_tts(emu.url, KEY)
    fmt, frames = audio_format(audio)
    assert fmt == "MP3" and frames > 44100


@needs("cartesia")
async def test_cartesia_tts_float_wav() -> None:
    async with emulate("cartesia", api_key=KEY) as emu:
        audio = await sdk_calls.cartesia_tts(emu.url, KEY)
    info = sf.info(io.BytesIO(audio))
    assert (info.format, info.subtype, info.samplerate) == ("WAV", "FLOAT", 44100)
