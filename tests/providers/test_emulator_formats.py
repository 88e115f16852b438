"""The emulators answer in every audio format the vendors document for TTS and decode what STT uploads carry."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
import soundfile as sf

from voicerouter.testing import codecs, emulate
from voicerouter.testing.server import tone

KEY = "test-key"


def sniff(audio: bytes) -> tuple[str, int, int]:
    """(major format, rate, frames) as libsndfile reads the bytes."""
    info = sf.info(io.BytesIO(audio))
    return info.format, info.samplerate, info.frames


@pytest.mark.parametrize("response_format, major", [("mp3", "MP3"), ("opus", "OGG"), ("flac", "FLAC"), ("wav", "WAV")])
async def test_openai_speech_formats(response_format: str, major: str) -> None:
    async with emulate("openai", api_key=KEY) as emu, httpx.AsyncClient() as client:
        response = await client.post(emu.url + "/v1/audio/speech", headers={"Authorization": f"Bearer {KEY}"},
                                     json={"model": "tts-1", "input": "Hello there.", "voice": "alloy",
                                           "response_format": response_format})
    assert response.status_code == 200, response.text
    fmt, rate, frames = sniff(response.content)
    assert fmt == major and rate == 24000 and frames > 0.5 * 24000


async def test_openai_speech_aac_is_refused_by_name() -> None:
    async with emulate("openai", api_key=KEY) as emu, httpx.AsyncClient() as client:
        response = await client.post(emu.url + "/v1/audio/speech", headers={"Authorization": f"Bearer {KEY}"},
                                     json={"model": "tts-1", "input": "Hi.", "voice": "alloy", "response_format": "aac"})
    assert response.status_code == 400 and "aac" in response.json()["error"]["message"]


@pytest.mark.parametrize("output_format, major, rate", [
    ("mp3_44100_128", "MP3", 44100), ("mp3_22050_32", "MP3", 22050), ("opus_48000_64", "OGG", 48000),
    ("wav_16000", "WAV", 16000),
])
async def test_elevenlabs_encoded_formats(output_format: str, major: str, rate: int) -> None:
    async with emulate("elevenlabs", api_key=KEY) as emu, httpx.AsyncClient() as client:
        response = await client.post(emu.url + "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb",
                                     params={"output_format": output_format}, headers={"xi-api-key": KEY},
                                     json={"text": "Hello there."})
    assert response.status_code == 200, response.text
    assert sniff(response.content)[:2] == (major, rate)


@pytest.mark.parametrize("output_format, samples", [("ulaw_8000", 8000), ("alaw_8000", 8000), ("pcm_22050", 22050)])
async def test_elevenlabs_raw_formats(output_format: str, samples: int) -> None:
    async with emulate("elevenlabs", api_key=KEY) as emu, httpx.AsyncClient() as client:
        response = await client.post(emu.url + "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb",
                                     params={"output_format": output_format}, headers={"xi-api-key": KEY},
                                     json={"text": "Hello there."})
        bad = await client.post(emu.url + "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb",
                                params={"output_format": "mp3_8000_8"}, headers={"xi-api-key": KEY},
                                json={"text": "Hello there."})
    width = 1 if output_format[1:4] == "law" else 2
    expected = int(0.06 * len("Hello there.") * samples) * width
    assert response.status_code == 200 and len(response.content) == expected
    if output_format == "ulaw_8000":  # G.711 mu-law decodes back to the tone
        pcm = codecs.decode_raw(response.content, "pcm_mulaw", 8000)
        assert np.abs(np.frombuffer(pcm, "<i2")).max() > 8000
    assert bad.status_code == 422


@pytest.mark.parametrize("output_format, major, subtype", [
    ({"container": "wav", "encoding": "pcm_f32le", "sample_rate": 44100}, "WAV", "FLOAT"),
    ({"container": "wav", "encoding": "pcm_mulaw", "sample_rate": 8000}, "WAV", "ULAW"),
    ({"container": "mp3", "sample_rate": 44100, "bit_rate": 128000}, "MP3", "MPEG_LAYER_III"),
])
async def test_cartesia_formats(output_format: dict, major: str, subtype: str) -> None:
    body = {"model_id": "sonic-3", "transcript": "Hello there.", "voice": "v", "output_format": output_format}
    async with emulate("cartesia", api_key=KEY) as emu, httpx.AsyncClient() as client:
        response = await client.post(emu.url + "/tts/bytes", content=json.dumps(body), headers={
            "Authorization": f"Bearer {KEY}", "Cartesia-Version": "2026-08-14", "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    info = sf.info(io.BytesIO(response.content))
    assert (info.format, info.subtype, info.samplerate) == (major, subtype, output_format["sample_rate"])


async def test_cartesia_raw_float() -> None:
    body = {"model_id": "sonic-3", "transcript": "Hi.", "voice": "v",
            "output_format": {"container": "raw", "encoding": "pcm_f32le", "sample_rate": 16000}}
    async with emulate("cartesia", api_key=KEY) as emu, httpx.AsyncClient() as client:
        response = await client.post(emu.url + "/tts/bytes", content=json.dumps(body), headers={
            "Authorization": f"Bearer {KEY}", "Cartesia-Version": "2026-08-14", "Content-Type": "application/json"})
    floats = np.frombuffer(response.content, "<f4")
    assert response.status_code == 200 and len(floats) == int(0.06 * 3 * 16000)
    assert 0.2 < np.abs(floats).max() <= 0.31


@pytest.mark.parametrize("query, major", [
    ({"encoding": "mp3"}, "MP3"), ({"encoding": "opus", "container": "ogg"}, "OGG"),
    ({"encoding": "flac", "sample_rate": "16000"}, "FLAC"), ({"encoding": "mulaw"}, "WAV"),
])
async def test_deepgram_speak_formats(query: dict, major: str) -> None:
    async with emulate("deepgram", api_key=KEY) as emu, httpx.AsyncClient() as client:
        response = await client.post(emu.url + "/v1/speak", params={"model": "aura-2-thalia-en", **query},
                                     headers={"Authorization": f"Token {KEY}"}, json={"text": "Hello there."})
    assert response.status_code == 200, response.text
    assert sniff(response.content)[0] == major


@pytest.mark.parametrize("query, encode", [
    ({"encoding": "linear16", "sample_rate": "16000", "channels": "1"}, lambda x: x.tobytes()),
    ({"encoding": "linear16", "sample_rate": "16000", "channels": "2"}, lambda x: np.repeat(x, 2).tobytes()),
    ({"encoding": "mulaw", "sample_rate": "16000"},
     lambda x: codecs.encode(x.tobytes(), codecs.AudioFormat("raw", 16000, "pcm_mulaw"))),
    ({}, lambda x: codecs.encode(x.tobytes(), codecs.AudioFormat("flac", 16000))),
    ({}, lambda x: codecs.encode(x.tobytes(), codecs.AudioFormat("mp3", 16000))),
    ({}, lambda x: codecs.encode(x.tobytes(), codecs.AudioFormat("ogg", 16000))),
])
async def test_deepgram_listen_decodes_raw_and_containers(query: dict, encode) -> None:
    samples = np.frombuffer(tone(1.0, 16000), "<i2")
    async with emulate("deepgram", api_key=KEY, transcript="one two") as emu, httpx.AsyncClient() as client:
        response = await client.post(emu.url + "/v1/listen", params={"model": "nova-3", **query},
                                     headers={"Authorization": f"Token {KEY}",
                                              "Content-Type": "application/octet-stream"},
                                     content=encode(samples))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["results"]["channels"][0]["alternatives"][0]["transcript"] == "one two"
    assert body["metadata"]["duration"] == pytest.approx(1.0, abs=0.1)


async def test_deepgram_listen_refuses_garbage() -> None:
    async with emulate("deepgram", api_key=KEY) as emu, httpx.AsyncClient() as client:
        raw = await client.post(emu.url + "/v1/listen", headers={"Authorization": f"Token {KEY}",
                                "Content-Type": "audio/wav"}, content=b"not audio at all" * 10)
        no_rate = await client.post(emu.url + "/v1/listen", params={"encoding": "linear16"},
                                    headers={"Authorization": f"Token {KEY}", "Content-Type": "audio/raw"},
                                    content=b"\0\0" * 100)
    assert raw.status_code == 400 and "corrupt or unsupported" in raw.json()["err_msg"]
    assert no_rate.status_code == 400


@pytest.mark.parametrize("output_format, major, subtype, rate", [
    ("audio-24khz-48kbitrate-mono-mp3", "MP3", "MPEG_LAYER_III", 24000),
    ("ogg-48khz-16bit-mono-opus", "OGG", "OPUS", 48000),
    ("riff-8khz-8bit-mono-mulaw", "WAV", "ULAW", 8000),
    ("riff-24khz-16bit-mono-pcm", "WAV", "PCM_16", 24000),
])
async def test_azure_synthesis_formats(output_format: str, major: str, subtype: str, rate: int) -> None:
    ssml = "<speak version='1.0' xml:lang='en-US'><voice name='en-US-AvaNeural'>Hello there.</voice></speak>"
    async with emulate("azure", api_key=KEY) as emu, httpx.AsyncClient() as client:
        response = await client.post(emu.url + "/cognitiveservices/v1", content=ssml, headers={
            "Ocp-Apim-Subscription-Key": KEY, "Content-Type": "application/ssml+xml", "User-Agent": "test",
            "X-Microsoft-OutputFormat": output_format})
        raw = await client.post(emu.url + "/cognitiveservices/v1", content=ssml, headers={
            "Ocp-Apim-Subscription-Key": KEY, "Content-Type": "application/ssml+xml", "User-Agent": "test",
            "X-Microsoft-OutputFormat": "raw-8khz-8bit-mono-alaw"})
    assert response.status_code == 200, response.text
    info = sf.info(io.BytesIO(response.content))
    assert (info.format, info.subtype, info.samplerate) == (major, subtype, rate)
    assert raw.status_code == 200 and len(raw.content) == int(0.06 * len("Hello there.") * 8000)


async def test_azure_recognition_takes_ogg_opus() -> None:
    ogg = codecs.encode(tone(1.0, 16000), codecs.AudioFormat("ogg", 16000))
    async with emulate("azure", api_key=KEY, transcript="one two") as emu, httpx.AsyncClient() as client:
        response = await client.post(
            emu.url + "/speech/recognition/conversation/cognitiveservices/v1", params={"language": "en-US"},
            headers={"Ocp-Apim-Subscription-Key": KEY, "Content-Type": "audio/ogg; codecs=opus"}, content=ogg)
    assert response.status_code == 200 and response.json()["DisplayText"] == "one two"
