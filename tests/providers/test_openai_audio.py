"""OpenAI audio clients against the OpenAI emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

from contextlib import aclosing

import pytest
from provider_helpers import synthesize_into

from voicerouter.config.schema import ProviderConfig
from voicerouter.errors import (
    AuthError,
    ConfigError,
    MissingSecretError,
    ProviderTimeout,
    RateLimitedError,
    RequestError,
    TransientProviderError,
)
from voicerouter.providers.base import AudioChunk, BuildContext
from voicerouter.providers.openai import create, create_compatible
from voicerouter.testing.server import emulate, tone

CANARY = "sk-canary-0123456789abcdef"
ENV = {"OPENAI_API_KEY": CANARY}


def make(kind: str, url: str, **extra):
    cfg = ProviderConfig(type="openai", kind=kind, api_key="${OPENAI_API_KEY}", base_url=url + "/v1", **extra)
    return create(f"oai-{kind}", kind, cfg, BuildContext(env=ENV))


def utterance(seconds: float = 1.0, rate: int = 16000) -> AudioChunk:
    return AudioChunk(tone(seconds, rate), rate)


async def collect(tts, text: str = "hello there, this is a test") -> list[AudioChunk]:
    return [chunk async for chunk in tts.synthesize(text)]


async def request_once(provider, kind: str) -> None:
    """One request of the provider's kind: a transcription, or a whole synthesis."""
    if kind == "stt":
        await provider.transcribe(utterance())
    else:
        await collect(provider)


async def test_transcribe_uploads_wav_and_returns_text():
    async with emulate("openai", api_key=CANARY, transcript="ask not what your country can do") as emu:
        async with aclosing(make("stt", emu.url, model="whisper-1", language="en-US")) as stt:
            result = await stt.transcribe(utterance(1.5))
    assert result.text == "ask not what your country can do"
    assert result.is_final and result.provider == "oai-stt"
    sent = emu.state.requests[-1]
    assert sent["model"] == "whisper-1"
    assert sent["fields"]["language"] == "en"
    assert sent["fields"]["response_format"] == "json"
    assert sent["filename"].endswith(".wav")
    assert sent["sample_rate"] == 16000 and sent["audio_s"] == pytest.approx(1.5)


async def test_synthesize_streams_pcm_in_several_chunks():
    async with emulate("openai", api_key=CANARY) as emu:
        async with aclosing(make("tts", emu.url, voice="nova", model="tts-1")) as tts:
            chunks = await collect(tts)
    assert len(chunks) > 1
    assert all(c.sample_rate == 24000 and len(c.pcm) % 2 == 0 for c in chunks)
    assert sum(c.samples for c in chunks) == len(tone(min(10.0, 0.06 * 27), 24000)) // 2
    sent = emu.state.requests[-1]
    assert sent["voice"] == "nova" and sent["response_format"] == "pcm" and sent["model"] == "tts-1"


async def test_probe_both_kinds():
    async with emulate("openai", api_key=CANARY) as emu:
        for kind in ("stt", "tts"):
            async with aclosing(make(kind, emu.url)) as provider:
                await provider.probe()
    assert [r["path"] for r in emu.state.requests] == ["/v1/audio/transcriptions", "/v1/audio/speech"]


async def test_wrong_key_is_auth_error_without_the_key():
    async with emulate("openai", api_key="the-right-key") as emu:
        async with aclosing(make("stt", emu.url)) as stt:
            with pytest.raises(AuthError) as info:
                await stt.transcribe(utterance())
    assert info.value.status == 401 and info.value.provider == "oai-stt"
    assert not info.value.retryable
    # The emulator echoes the key it got; the client masks it.
    assert CANARY not in str(info.value) and "Incorrect API key provided: ***" in str(info.value)


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("error:400", RequestError, 400),
        ("error:404", RequestError, 404),
        ("error:500", TransientProviderError, 500),
        ("error:503", TransientProviderError, 503),
        ("error:403", AuthError, 403),
    ],
)
async def test_status_faults_map_to_typed_errors(fault, error, status):
    async with emulate("openai", api_key=CANARY, faults=[fault]) as emu:
        for kind in ("stt", "tts"):
            async with aclosing(make(kind, emu.url)) as provider:
                with pytest.raises(error) as info:
                    await request_once(provider, kind)
            assert info.value.status == status
            assert info.value.provider == f"oai-{kind}"
            assert CANARY not in str(info.value)


async def test_rate_limit_carries_retry_after():
    async with emulate("openai", api_key=CANARY, faults=["error:429:7*1"]) as emu:
        async with aclosing(make("tts", emu.url)) as tts:
            with pytest.raises(RateLimitedError) as info:
                await collect(tts)
            chunks = await collect(tts)  # the fault was for one request only
    assert info.value.retry_after == 7.0 and info.value.status == 429
    assert "rate_limit_exceeded" in str(info.value)
    assert chunks


async def test_rate_limit_reads_retry_after_ms():
    async with emulate("openai", api_key=CANARY, faults=["error:429:1500ms"]) as emu:
        async with aclosing(make("stt", emu.url)) as stt:
            with pytest.raises(RateLimitedError) as info:
                await stt.transcribe(utterance())
    assert info.value.retry_after == 1.5


async def test_vendor_validation_errors_are_request_errors():
    async with emulate("openai", api_key=CANARY) as emu:
        async with aclosing(make("tts", emu.url, model="no-such-model")) as bad_model, \
                aclosing(make("tts", emu.url, voice="robot")) as bad_voice:
            with pytest.raises(RequestError) as missing:
                await collect(bad_model)
            with pytest.raises(RequestError) as invalid:
                await collect(bad_voice)
    assert missing.value.status == 404 and "does not exist" in str(missing.value)
    assert invalid.value.status == 400 and "robot" in str(invalid.value)


async def test_wrong_path_is_404_request_error():
    async with emulate("openai", api_key=CANARY) as emu:
        cfg = ProviderConfig(type="openai", kind="stt", api_key="${OPENAI_API_KEY}", base_url=emu.url)  # no /v1
        async with aclosing(create("oai-stt", "stt", cfg, BuildContext(env=ENV))) as stt:
            with pytest.raises(RequestError) as info:
                await stt.transcribe(utterance())
    assert info.value.status == 404


async def test_hang_times_out():
    async with emulate("openai", api_key=CANARY, faults=["hang"]) as emu:
        for kind in ("stt", "tts"):
            async with aclosing(make(kind, emu.url, timeout_ms=300)) as provider:
                with pytest.raises(ProviderTimeout) as info:
                    await request_once(provider, kind)
            assert info.value.retryable and info.value.provider == f"oai-{kind}"


async def test_stall_mid_stream_times_out():
    async with emulate("openai", api_key=CANARY, faults=["stall:5s"]) as emu:
        got: list[AudioChunk] = []
        async with aclosing(make("tts", emu.url, timeout_ms=300)) as tts:
            with pytest.raises(ProviderTimeout):
                await synthesize_into(tts, "a sentence long enough to stall in the middle", got)
    assert got  # audio flowed before the stall


@pytest.mark.parametrize("fault", ["drop", "drop:0.05s", "truncate"])
async def test_dropped_or_truncated_body_is_transient(fault):
    async with emulate("openai", api_key=CANARY, faults=[fault]) as emu:
        for kind in ("stt", "tts"):
            async with aclosing(make(kind, emu.url)) as provider:
                with pytest.raises(TransientProviderError) as info:
                    await request_once(provider, kind)
            assert info.value.retryable and not isinstance(info.value, ProviderTimeout)
            assert info.value.provider == f"oai-{kind}"


async def test_malformed_responses_are_transient_with_snippet():
    async with emulate("openai", api_key=CANARY, faults=["malformed"]) as emu:
        async with aclosing(make("stt", emu.url)) as stt, aclosing(make("tts", emu.url)) as tts:
            with pytest.raises(TransientProviderError) as bad_json:
                await stt.transcribe(utterance())
            with pytest.raises(TransientProviderError) as bad_audio:
                await collect(tts)
    assert "malformed" in str(bad_json.value) and "half a json" in str(bad_json.value)
    assert "malformed" in str(bad_audio.value) and "text/html" in str(bad_audio.value)


async def test_slow_first_byte_still_succeeds():
    async with emulate("openai", api_key=CANARY, faults=["slow:200ms*1"]) as emu:
        async with aclosing(make("tts", emu.url)) as tts:
            chunks = await collect(tts)
    assert chunks


def test_missing_key_names_the_variable():
    cfg = ProviderConfig(type="openai", kind="stt", api_key="${OAI_TENANT_KEY}")
    with pytest.raises(MissingSecretError) as info:
        create("oai-stt", "stt", cfg, BuildContext(env={}))
    assert "OAI_TENANT_KEY" in str(info.value) and info.value.provider == "oai-stt"


def test_missing_api_key_field_falls_back_to_openai_api_key():
    cfg = ProviderConfig(type="openai", kind="tts")
    with pytest.raises(MissingSecretError) as info:
        create("oai-tts", "tts", cfg, BuildContext(env={}))
    assert "OPENAI_API_KEY" in str(info.value)


def test_plain_http_to_remote_host_is_rejected():
    cfg = ProviderConfig(type="openai", kind="stt", api_key="${OPENAI_API_KEY}", base_url="http://api.example.com/v1")
    with pytest.raises(ConfigError) as info:
        create("oai-stt", "stt", cfg, BuildContext(env=ENV))
    assert "non-loopback" in str(info.value) and "oai-stt" in str(info.value)


def test_kind_must_be_given():
    cfg = ProviderConfig(type="openai", api_key="${OPENAI_API_KEY}")
    with pytest.raises(ConfigError):
        create("oai", None, cfg, BuildContext(env=ENV))


def test_compatible_needs_base_url():
    with pytest.raises(ConfigError) as info:
        create_compatible("local-whisper", "stt", ProviderConfig(type="openai-compatible"), BuildContext(env={}))
    assert "base_url" in str(info.value)


async def test_compatible_without_key_and_any_model():
    async with emulate("openai-compatible", api_key="") as emu:
        cfg = ProviderConfig(type="openai-compatible", kind="tts", base_url=emu.url + "/v1", model="kokoro",
                             voice="af_sky")
        async with aclosing(create_compatible("kokoro", "tts", cfg, BuildContext(env={}))) as tts:
            # The emulator still wants a Bearer header; without a key the server answers 401.
            with pytest.raises(AuthError):
                await collect(tts)
        emu.state.api_key = "local-test-key"
        cfg = cfg.model_copy(update={"api_key": "${LOCAL_KEY}"})
        async with aclosing(create_compatible("kokoro", "tts", cfg, BuildContext(env={"LOCAL_KEY": "local-test-key"}))) as tts:
            chunks = await collect(tts)
    assert chunks and emu.state.requests[-1]["model"] == "kokoro"


@pytest.mark.slow
async def test_real_speech_round_trip_through_the_emulator():
    """jfk.flac -> WAV upload -> emulator runs pocketsphinx; piper speech streams back."""
    from pathlib import Path

    from voicerouter.audio.io import read_audio

    speech = read_audio(Path(__file__).parents[1] / "fixtures" / "jfk.flac")
    async with emulate("openai", api_key=CANARY, transcript=None, tts_engine="piper") as emu:
        async with aclosing(make("stt", emu.url)) as stt, aclosing(make("tts", emu.url)) as tts:
            heard = await stt.transcribe(speech)
            chunks = await collect(tts, "Ask not what your country can do for you.")
    assert "fellow america" in heard.text.lower() and "can do for your" in heard.text.lower()
    assert emu.state.requests[0]["audio_s"] == pytest.approx(11.0, abs=0.01)
    assert len(chunks) > 1 and sum(c.duration_s for c in chunks) > 1.0


async def test_streamed_transcription_reports_partials():
    partials: list[str] = []
    async with emulate("openai", api_key=CANARY, transcript="ask not what your country can do") as emu:
        async with aclosing(make("stt", emu.url, model="gpt-4o-transcribe", options={"stream": True})) as stt:
            stream = await stt.open_stream(16000, on_partial=lambda t: partials.append(t.text))
            for i in range(0, 32000, 640):
                await stream.send(tone(1.0, 16000)[i : i + 640])
            final = await stream.finish()
            await stream.aclose()
    assert final.text == "ask not what your country can do" and final.is_final
    assert partials[0] == "ask" and partials[-1] == final.text and len(partials) == 7
    assert emu.state.requests[-1]["fields"]["stream"] == "true"


async def test_stream_option_is_ignored_for_whisper_1():
    async with emulate("openai", api_key=CANARY, transcript="plain") as emu:
        async with aclosing(make("stt", emu.url, model="whisper-1", options={"stream": True})) as stt:
            result = await stt.transcribe(utterance())
    assert result.text == "plain" and "stream" not in emu.state.requests[-1]["fields"]


@pytest.mark.parametrize("fault", ["drop", "malformed"])
async def test_broken_transcript_stream_is_transient(fault):
    async with emulate("openai", api_key=CANARY, transcript="one two three four", faults=[fault]) as emu:
        async with aclosing(make("stt", emu.url, model="gpt-4o-transcribe", options={"stream": True})) as stt:
            with pytest.raises(TransientProviderError) as info:
                await stt.transcribe(utterance())
    assert info.value.provider == "oai-stt" and not isinstance(info.value, ProviderTimeout)
