"""The Azure Speech client against the Azure emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

from contextlib import aclosing

import pytest
from provider_helpers import build, collect, probe_each, words_in_common

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
from voicerouter.providers.azure import AzureSTT, AzureTTS, create
from voicerouter.providers.base import AudioChunk, BuildContext
from voicerouter.testing import emulate, tone

CANARY = "azcanary9f8e7d6c5b4a"  # must never appear in an error message


def make(url: str | None, kind: str = "stt", key: str = CANARY, **fields) -> AzureSTT | AzureTTS:
    return build(create, "azure", "az", url, kind, key=key, env_var="AZ_TEST_KEY", **fields)


async def transcribe(stt: AzureSTT, audio: AudioChunk) -> str:
    try:
        return (await stt.transcribe(audio)).text
    finally:
        await stt.aclose()


async def test_recognition_success() -> None:
    async with emulate("azure", api_key=CANARY, transcript="Remind me to buy 5 pencils.") as emu:
        text = await transcribe(make(emu.url, language="en-GB"), AudioChunk(tone(1.0, 16000), 16000))
    assert text == "Remind me to buy 5 pencils."
    request = emu.state.requests[-1]
    assert request["path"] == "/speech/recognition/conversation/cognitiveservices/v1"
    assert request["query"] == {"language": "en-GB", "format": "simple"}
    assert request["headers"]["Ocp-Apim-Subscription-Key"] == CANARY
    assert request["headers"]["Content-Type"] == "audio/wav; codecs=audio/pcm; samplerate=16000"


async def test_recognition_resamples_to_16k() -> None:
    async with emulate("azure", api_key=CANARY, transcript="resampled") as emu:
        text = await transcribe(make(emu.url), AudioChunk(tone(1.0, 24000), 24000))
    assert text == "resampled"  # the emulator answers 400 to anything but 16 kHz WAV
    assert emu.state.requests[-1]["bytes"] == 44 + 32000


async def test_no_match_is_empty_transcript() -> None:
    async with emulate("azure", api_key=CANARY, transcript="") as emu:
        async with aclosing(make(emu.url)) as stt:
            result = await stt.transcribe(AudioChunk(tone(0.5, 16000), 16000))
    assert result.text == "" and result.is_final and result.provider == "az"


async def test_recognition_status_error_is_transient() -> None:
    async with emulate("azure", api_key=CANARY, faults="error:200") as emu:
        with pytest.raises(TransientProviderError) as info:
            await transcribe(make(emu.url), AudioChunk(tone(0.5, 16000), 16000))
    assert "RecognitionStatus Error" in str(info.value) and info.value.provider == "az"


@pytest.mark.parametrize("spec, error, status", [
    ("error:401", AuthError, 401), ("error:403", AuthError, 403), ("error:400", RequestError, 400),
    ("error:429:5", RateLimitedError, 429), ("error:502", TransientProviderError, 502),
    ("error:503", TransientProviderError, 503), ("malformed", TransientProviderError, None),
    ("truncate", TransientProviderError, None), ("drop", TransientProviderError, None),
])
async def test_recognition_failures(spec: str, error: type[ProviderError], status: int | None) -> None:
    async with emulate("azure", api_key=CANARY, faults=spec) as emu:
        with pytest.raises(error) as info:
            await transcribe(make(emu.url), AudioChunk(tone(0.5, 16000), 16000))
    assert info.value.status == status and CANARY not in str(info.value)
    if status == 429:
        assert info.value.retry_after == 5.0


async def test_wrong_key_is_auth_error() -> None:
    async with emulate("azure", api_key="the-right-key") as emu:
        with pytest.raises(AuthError) as info:
            await transcribe(make(emu.url), AudioChunk(tone(0.5, 16000), 16000))
    assert info.value.status == 401 and CANARY not in str(info.value)


async def test_recognition_hang_is_timeout() -> None:
    async with emulate("azure", api_key=CANARY, faults="hang") as emu:
        with pytest.raises(ProviderTimeout):
            await transcribe(make(emu.url, timeout_ms=300), AudioChunk(tone(0.3, 16000), 16000))


async def test_too_long_utterance_refused_before_sending() -> None:
    async with emulate("azure", api_key=CANARY) as emu:
        with pytest.raises(RequestError):
            await transcribe(make(emu.url), AudioChunk(bytes(16000 * 2 * 61), 16000))
    assert emu.state.requests == []


async def test_synthesis_streams_pcm_and_escapes_ssml() -> None:
    text = 'Tom & Jerry say 3 < 4 > 2 and "quote" \'apos\' </voice><speak>'
    async with emulate("azure", api_key=CANARY) as emu:
        chunks = await collect(make(emu.url, kind="tts", voice="en-US-AvaNeural"), text)
    assert len(chunks) > 3 and {c.sample_rate for c in chunks} == {24000}
    request = emu.state.requests[-1]
    assert request["text"] == text  # the emulator parsed the SSML back to exactly the text
    assert "&amp;" in request["body"] and "&lt;/voice&gt;" in request["body"]
    assert request["headers"]["X-Microsoft-OutputFormat"] == "raw-24khz-16bit-mono-pcm"
    assert request["headers"]["User-Agent"] == "voicerouter"
    assert request["headers"]["Content-Type"] == "application/ssml+xml"
    assert "name=\"en-US-AvaNeural\"" in request["body"]


async def test_synthesis_at_16k() -> None:
    async with emulate("azure", api_key=CANARY) as emu:
        chunks = await collect(make(emu.url, kind="tts", sample_rate=16000), "Hello.")
    assert {c.sample_rate for c in chunks} == {16000}
    assert emu.state.requests[-1]["headers"]["X-Microsoft-OutputFormat"] == "raw-16khz-16bit-mono-pcm"


@pytest.mark.parametrize("spec, error, status", [
    ("error:401", AuthError, 401), ("error:415", RequestError, 415), ("error:429", RateLimitedError, 429),
    ("error:503", TransientProviderError, 503), ("malformed", TransientProviderError, None),
    ("drop", TransientProviderError, None), ("truncate", TransientProviderError, None),
])
async def test_synthesis_failures(spec: str, error: type[ProviderError], status: int | None) -> None:
    async with emulate("azure", api_key=CANARY, faults=spec) as emu:
        with pytest.raises(error) as info:
            await collect(make(emu.url, kind="tts"), "How can I help you today?")
    assert info.value.status == status and CANARY not in str(info.value)


async def test_synthesis_stall_is_timeout() -> None:
    async with emulate("azure", api_key=CANARY, faults="stall:2s") as emu:
        with pytest.raises(ProviderTimeout):
            await collect(make(emu.url, kind="tts", timeout_ms=300), "A long enough sentence to stall midway.")


def test_config() -> None:
    with pytest.raises(MissingSecretError) as info:
        create("az", "stt", ProviderConfig(type="azure", region="westeurope"), BuildContext(env={}))
    assert "AZURE_SPEECH_KEY" in str(info.value)
    with pytest.raises(ConfigError):
        make(None)  # neither region nor base_url
    regional = make(None, kind="tts", region="westeurope")
    assert str(regional._client.base_url).startswith("https://westeurope.tts.speech.microsoft.com")
    assert str(make(None, region="eastus")._client.base_url).startswith("https://eastus.stt.speech.microsoft.com")
    with pytest.raises(ConfigError):
        make("http://speech.example.com")
    with pytest.raises(ConfigError):
        make("http://127.0.0.1:9", kind="tts", sample_rate=11025)


async def test_probe() -> None:
    async with emulate("azure", api_key=CANARY, transcript="") as emu:
        await probe_each(lambda kind: make(emu.url, kind=kind), ("stt", "tts"))


@pytest.mark.slow
async def test_real_speech_round_trip() -> None:
    """Piper speech from the synthesis emulator, recognized by PocketSphinx behind the recognition emulator."""
    phrase = "ask not what your country can do for you"
    async with emulate("azure", api_key=CANARY, tts_engine="piper", transcript=None) as emu:
        chunks = await collect(make(emu.url, kind="tts", sample_rate=22050), phrase)
        text = await transcribe(make(emu.url, timeout_ms=60000),
                                AudioChunk(b"".join(c.pcm for c in chunks), 22050))
    assert words_in_common(text, phrase) >= 3, text


@pytest.mark.parametrize("query, content_type, status", [
    ("format=simple", "audio/wav; codecs=audio/pcm; samplerate=16000", 400),  # no language
    ("language=en-US", "audio/wav; codecs=audio/pcm; samplerate=8000", 400),
    ("language=en-US", "application/octet-stream", 415),
    ("language=en-US&format=verbose", "audio/wav; codecs=audio/pcm; samplerate=16000", 400),
])
async def test_emulator_recognition_validates_like_azure(query: str, content_type: str, status: int) -> None:
    import httpx

    from voicerouter.providers.azure import wav_bytes

    path = "/speech/recognition/conversation/cognitiveservices/v1?" + query
    async with emulate("azure", api_key=CANARY) as emu, httpx.AsyncClient() as client:
        response = await client.post(emu.url + path, content=wav_bytes(tone(0.2, 16000), 16000),
                                     headers={"Ocp-Apim-Subscription-Key": CANARY, "Content-Type": content_type})
        keyless = await client.post(emu.url + path, content=b"", headers={"Content-Type": content_type})
    assert response.status_code == status
    assert keyless.status_code == 403


@pytest.mark.parametrize("body, headers, status", [
    ("<speak version='1.0' xml:lang='en-US'><voice name='v'>hi</voice></speak>", {"Content-Type": "text/xml"}, 415),
    ("<speak version='1.0' xml:lang='en-US'><voice name='v'>a < b</voice></speak>", {}, 400),  # unescaped
    ("<speak version='1.0' xml:lang='en-US'>no voice</speak>", {}, 400),
    ("<speak version='1.0' xml:lang='en-US'><voice name='v'>hi</voice></speak>",
     {"X-Microsoft-OutputFormat": "raw-16khz-8bit-mono-pcm"}, 400),
    ("<speak version='1.0' xml:lang='en-US'><voice name='v'>hi</voice></speak>", {"User-Agent": ""}, 400),
    ("<speak version='1.0' xml:lang='en-US'><voice name='v'>hi</voice></speak>", {}, 200),
])
async def test_emulator_synthesis_validates_like_azure(body: str, headers: dict, status: int) -> None:
    import httpx

    base = {"Ocp-Apim-Subscription-Key": CANARY, "Content-Type": "application/ssml+xml",
            "X-Microsoft-OutputFormat": "raw-16khz-16bit-mono-pcm", "User-Agent": "test"}
    async with emulate("azure", api_key=CANARY) as emu, httpx.AsyncClient() as client:
        response = await client.post(emu.url + "/cognitiveservices/v1", content=body.encode(),
                                     headers={**base, **headers})
    assert response.status_code == status


def test_unknown_option_is_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        make("http://127.0.0.1:9", options={"profanityy": "raw"})
    assert "profanityy" in str(info.value)
