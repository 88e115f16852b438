"""The ElevenLabs client against the ElevenLabs emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from contextlib import aclosing

import provider_helpers
import pytest
from provider_helpers import build, probe_each, words_in_common

from voicerouter.config.schema import ProviderConfig
from voicerouter.errors import (
    AuthError,
    ConfigError,
    MissingSecretError,
    ProviderError,
    ProviderTimeout,
    RateLimitedError,
    RequestError,
    TransientProviderError,
)
from voicerouter.providers.base import AudioChunk, BuildContext
from voicerouter.providers.elevenlabs import ElevenLabsSTT, ElevenLabsTTS, create
from voicerouter.testing import emulate, tone

CANARY = "xi-canary-0d9b44e1f7"  # must never appear in an error message
TEXT = "Your order ships tomorrow morning."


def make(url: str, kind: str = "tts", key: str = CANARY, **fields) -> ElevenLabsTTS | ElevenLabsSTT:
    return build(create, "elevenlabs", "eleven", url, kind, key=key, env_var="XI_TEST_KEY", **fields)


async def collect(tts: ElevenLabsTTS, text: str = TEXT) -> list[AudioChunk]:
    return await provider_helpers.collect(tts, text)


def assert_clean(err: BaseException) -> None:
    assert CANARY not in str(err)


async def test_tts_streams_pcm_at_configured_rate() -> None:
    async with emulate("elevenlabs", api_key=CANARY) as emu:
        tts = make(emu.url, sample_rate=24000, voice="21m00Tcm4TlvDq8ikWAM",
                   options={"voice_settings": {"stability": 0.4, "similarity_boost": 0.8}})
        chunks = await collect(tts)
    assert len(chunks) > 3
    assert all(c.sample_rate == 24000 and len(c.pcm) % 2 == 0 for c in chunks)
    assert sum(c.duration_s for c in chunks) == pytest.approx(0.06 * len(TEXT), rel=0.01)
    request = emu.state.requests[-1]
    assert request["path"] == "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream"
    assert request["query"] == {"output_format": "pcm_24000"}
    assert request["headers"]["xi-api-key"] == CANARY
    assert json.loads(request["body"]) == {
        "text": TEXT, "model_id": "eleven_flash_v2_5", "voice_settings": {"stability": 0.4, "similarity_boost": 0.8},
    }


async def test_tts_default_rate_is_16k() -> None:
    async with emulate("elevenlabs", api_key=CANARY) as emu:
        chunks = await collect(make(emu.url, language="en-US"))
    assert {c.sample_rate for c in chunks} == {16000}
    body = json.loads(emu.state.requests[-1]["body"])
    assert body["language_code"] == "en"


async def test_wrong_key_is_auth_error_without_key() -> None:
    async with emulate("elevenlabs", api_key="the-right-key") as emu:
        with pytest.raises(AuthError) as info:
            await collect(make(emu.url))
    assert info.value.status == 401 and "invalid_api_key" in str(info.value)
    assert_clean(info.value)


async def test_validation_422_is_request_error_with_fields() -> None:
    async with emulate("elevenlabs", api_key=CANARY) as emu:
        async with aclosing(make(emu.url, kind="stt", model="scribe_v9")) as stt:
            with pytest.raises(RequestError) as info:
                await stt.transcribe(AudioChunk(tone(0.3, 16000), 16000))
    assert info.value.status == 422 and "body.model_id" in str(info.value)


async def test_unknown_voice_and_empty_text_are_request_errors() -> None:
    async with emulate("elevenlabs", api_key=CANARY) as emu:
        with pytest.raises(RequestError) as voice:
            await collect(make(emu.url, voice="nope"))
        with pytest.raises(RequestError) as empty:
            await collect(make(emu.url), text="   ")
    assert "voice_not_found" in str(voice.value) and "empty_text" in str(empty.value)


@pytest.mark.parametrize("spec, error, status", [
    ("error:403", AuthError, 403), ("error:429:2", RateLimitedError, 429), ("error:500", TransientProviderError, 500),
    ("error:503", TransientProviderError, 503), ("malformed", TransientProviderError, None),
    ("drop", TransientProviderError, None), ("truncate", TransientProviderError, None),
])
async def test_tts_errors(spec: str, error: type[ProviderError], status: int | None) -> None:
    async with emulate("elevenlabs", api_key=CANARY, faults=spec) as emu:
        with pytest.raises(error) as info:
            await collect(make(emu.url))
    assert info.value.status == status and info.value.provider == "eleven"
    assert_clean(info.value)
    if spec.startswith("error:429"):
        assert info.value.retry_after == 2.0 and "too_many_concurrent_requests" in str(info.value)


async def test_tts_hang_is_timeout() -> None:
    async with emulate("elevenlabs", api_key=CANARY, faults="hang") as emu:
        with pytest.raises(ProviderTimeout):
            await collect(make(emu.url, timeout_ms=300))


async def test_stt_transcribes_multipart_wav() -> None:
    async with emulate("elevenlabs", api_key=CANARY, transcript="cancel my subscription") as emu:
        async with aclosing(make(emu.url, kind="stt", language="en-GB")) as stt:
            result = await stt.transcribe(AudioChunk(tone(0.8, 16000), 16000))
    assert result.text == "cancel my subscription" and result.provider == "eleven"
    form = emu.state.requests[-1]["form"]
    assert form["model_id"] == "scribe_v1" and form["language_code"] == "en"
    assert form["tag_audio_events"] == "false"
    assert not stt.supports_streaming


@pytest.mark.parametrize("spec, error", [("error:401", AuthError), ("error:429", RateLimitedError),
                                         ("error:502", TransientProviderError), ("malformed", TransientProviderError),
                                         ("truncate", TransientProviderError), ("drop", TransientProviderError)])
async def test_stt_errors(spec: str, error: type[ProviderError]) -> None:
    async with emulate("elevenlabs", api_key=CANARY, faults=spec) as emu:
        async with aclosing(make(emu.url, kind="stt")) as stt:
            with pytest.raises(error) as info:
                await stt.transcribe(AudioChunk(tone(0.3, 16000), 16000))
    assert_clean(info.value)
    if spec == "malformed":
        assert "malformed" in str(info.value) and "upstream glitch" in str(info.value)


async def test_stt_hang_is_timeout() -> None:
    async with emulate("elevenlabs", api_key=CANARY, faults="hang") as emu:
        async with aclosing(make(emu.url, kind="stt", timeout_ms=300)) as stt:
            with pytest.raises(ProviderTimeout):
                await stt.transcribe(AudioChunk(tone(0.3, 16000), 16000))


def test_missing_key_names_variable() -> None:
    config = ProviderConfig(type="elevenlabs", kind="tts", api_key="${XI_MISSING_KEY}")
    with pytest.raises(MissingSecretError) as info:
        create("eleven", "tts", config, BuildContext(env={}))
    assert "XI_MISSING_KEY" in str(info.value)


def test_default_key_variable_is_conventional() -> None:
    config = ProviderConfig(type="elevenlabs", kind="tts")
    with pytest.raises(MissingSecretError) as info:
        create("eleven", "tts", config, BuildContext(env={}))
    assert "ELEVENLABS_API_KEY" in str(info.value)


def test_bad_rate_and_plain_http_refused() -> None:
    with pytest.raises(ConfigError):
        make("http://127.0.0.1:9", sample_rate=11025)
    with pytest.raises(ConfigError):
        make("http://api.elevenlabs.io")


async def test_probe() -> None:
    async with emulate("elevenlabs", api_key=CANARY, transcript="") as emu:
        await probe_each(lambda kind: make(emu.url, kind=kind), ("tts", "stt"))


@pytest.mark.slow
async def test_real_speech_round_trip() -> None:
    """Piper speech from the TTS emulator, recognized by PocketSphinx behind the Scribe emulator."""
    phrase = "ask not what your country can do for you"
    async with emulate("elevenlabs", api_key=CANARY, tts_engine="piper", transcript=None) as emu:
        chunks = await collect(make(emu.url, sample_rate=16000), text=phrase)
        async with aclosing(make(emu.url, kind="stt", timeout_ms=60000)) as stt:
            result = await stt.transcribe(AudioChunk(b"".join(c.pcm for c in chunks), 16000))
    assert len(chunks) > 3
    assert words_in_common(result.text, phrase) >= 3, result.text


@pytest.mark.parametrize("path, body, headers, status, shape", [
    ("/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream?output_format=pcm_16000", b'{"model_id": "eleven_flash_v2_5"}',
     {"Content-Type": "application/json"}, 422, list),
    ("/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream?output_format=pcm_11025", b'{"text": "hi"}',
     {"Content-Type": "application/json"}, 422, list),
    ("/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream?output_format=pcm_16000", b'{"text": "hi"}',
     {"Content-Type": "text/plain"}, 422, list),
    ("/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream?output_format=pcm_16000", b'{"text": "hi", "model_id": "x"}',
     {"Content-Type": "application/json"}, 400, dict),
    ("/v1/speech-to-text", b"", {"Content-Type": "application/json"}, 422, list),
])
async def test_emulator_validates_like_elevenlabs(path: str, body: bytes, headers: dict, status: int,
                                                  shape: type) -> None:
    import httpx

    async with emulate("elevenlabs", api_key=CANARY) as emu, httpx.AsyncClient() as client:
        response = await client.post(emu.url + path, content=body, headers={"xi-api-key": CANARY, **headers})
        missing = await client.post(emu.url + path, content=body, headers=headers)
    assert response.status_code == status
    assert isinstance(response.json()["detail"], shape)
    assert missing.status_code == 401 and missing.json()["detail"]["status"] == "needs_authorization"


def test_unknown_option_is_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        make("http://127.0.0.1:9", options={"voice_setting": {}})
    assert "voice_setting" in str(info.value) and "voice_settings" in str(info.value)
