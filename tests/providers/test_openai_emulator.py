"""The OpenAI emulators validate requests like the vendor, seen with raw HTTP and WebSocket clients."""

from __future__ import annotations

import base64
import io
import json
import wave

import httpx
import pytest
import websockets

from voicerouter.testing.server import emulate, tone

KEY = "emu-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(tone(seconds, rate))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "files", "status", "param"),
    [
        ({"model": "whisper-1"}, None, 400, "file"),
        ({}, {"file": ("a.wav", wav(), "audio/wav")}, 400, "model"),
        ({"model": "whisper-1", "response_format": "yaml"}, {"file": ("a.wav", wav(), "audio/wav")}, 400,
         "response_format"),
        ({"model": "whisper-1", "language": "english"}, {"file": ("a.wav", wav(), "audio/wav")}, 400, "language"),
        ({"model": "whisper-1"}, {"file": ("a.wav", b"not audio at all", "audio/wav")}, 400, "file"),
        ({"model": "whisper-9"}, {"file": ("a.wav", wav(), "audio/wav")}, 404, None),
    ],
)
async def test_transcriptions_validation(data, files, status, param):
    async with emulate("openai", api_key=KEY) as emu, httpx.AsyncClient(base_url=emu.url + "/v1") as client:
        if files is None:  # still multipart, just without the file
            files = {"prompt": (None, "x")}
        response = await client.post("/audio/transcriptions", data=data, files=files, headers=AUTH)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": "hi", "voice": "alloy"}, 400, "model"),
        ({"model": "tts-1", "voice": "alloy"}, 400, "input"),
        ({"model": "tts-1", "input": "hi"}, 400, "voice"),
        ({"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": "ogg"}, 400, "response_format"),
        ({"model": "tts-1", "input": "hi", "voice": "alloy", "speed": 9}, 400, "speed"),
        ({"model": "tts-1", "input": "x" * 4097, "voice": "alloy"}, 400, "input"),
    ],
)
async def test_speech_validation(body, status, param):
    async with emulate("openai", api_key=KEY) as emu, httpx.AsyncClient(base_url=emu.url + "/v1") as client:
        response = await client.post("/audio/speech", json=body, headers=AUTH)
    assert response.status_code == status and response.json()["error"]["param"] == param


async def test_speech_wav_and_text_transcript():
    async with emulate("openai", api_key=KEY, transcript="plain words") as emu, \
            httpx.AsyncClient(base_url=emu.url + "/v1") as client:
        speech = await client.post("/audio/speech", headers=AUTH,
                                   json={"model": "tts-1", "input": "hello", "voice": "alloy", "response_format": "wav"})
        text = await client.post("/audio/transcriptions", headers=AUTH, data={"model": "whisper-1",
                                 "response_format": "text"}, files={"file": ("a.wav", wav(), "audio/wav")})
    with wave.open(io.BytesIO(speech.content)) as w:
        assert w.getframerate() == 24000 and w.getnframes() > 0
    assert text.text == "plain words\n"


async def test_missing_auth_header_and_unknown_path():
    async with emulate("openai", api_key=KEY) as emu, httpx.AsyncClient(base_url=emu.url) as client:
        no_auth = await client.post("/v1/audio/speech", json={})
        unknown = await client.get("/v2/whatever", headers=AUTH)
    assert no_auth.status_code == 401 and "API key" in no_auth.json()["error"]["message"]
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_url"


async def test_fault_counts_and_retry_after_header():
    async with emulate("openai", api_key=KEY, faults=["error:429:4*2"]) as emu, \
            httpx.AsyncClient(base_url=emu.url + "/v1") as client:
        body = {"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": "pcm"}
        statuses = [(await client.post("/audio/speech", json=body, headers=AUTH)) for _ in range(3)]
    assert [r.status_code for r in statuses] == [429, 429, 200]
    assert statuses[0].headers["Retry-After"] == "4"
    assert statuses[0].json()["error"]["code"] == "rate_limit_exceeded"


async def recv(ws) -> dict:
    return json.loads(await ws.recv())


async def test_realtime_rejects_bad_events_and_keeps_the_session():
    async with emulate("openai-realtime", api_key=KEY, transcript="spoken") as emu:
        async with websockets.connect(f"{emu.ws_url}/v1/realtime?model=gpt-realtime", additional_headers=AUTH) as ws:
            assert (await recv(ws))["type"] == "session.created"
            await ws.send("not json")
            first = await recv(ws)
            await ws.send(json.dumps({"type": "bogus.event", "event_id": "evt_1"}))
            second = await recv(ws)
            await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "x"}}))
            third = await recv(ws)  # GA requires session.type
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            fourth = await recv(ws)  # empty buffer
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}))
            fifth = await recv(ws)
            # Still usable: a whole turn works afterwards.
            await ws.send(json.dumps({"type": "session.update", "session": {
                "type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}}))
            assert (await recv(ws))["type"] == "session.updated"
            audio = base64.b64encode(tone(0.5, 24000)).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await ws.send(json.dumps({"type": "response.create"}))
            kinds = []
            while not kinds or kinds[-1] != "response.done":
                kinds.append((await recv(ws))["type"])
    for event in (first, second, third, fourth, fifth):
        assert event["type"] == "error" and event["error"]["type"] == "invalid_request_error"
    assert second["error"]["event_id"] == "evt_1"
    assert third["error"]["param"] == "session.type"
    assert fourth["error"]["code"] == "input_audio_buffer_commit_empty"
    order = [k for k in kinds if not k.endswith(".delta")]
    assert order == [
        "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done",
        "conversation.item.input_audio_transcription.completed", "response.created", "rate_limits.updated",
        "response.output_item.added", "conversation.item.added", "response.content_part.added",
        "response.output_audio.done", "response.output_audio_transcript.done", "response.content_part.done",
        "response.output_item.done", "response.done",
    ]
    assert "response.output_audio.delta" in kinds and "response.output_audio_transcript.delta" in kinds


async def test_realtime_handshake_status_faults():
    async with emulate("openai-realtime", api_key=KEY, faults=["error:503*1"]) as emu:
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            async with websockets.connect(f"{emu.ws_url}/v1/realtime", additional_headers=AUTH):
                pass
        assert info.value.response.status_code == 503
        async with websockets.connect(f"{emu.ws_url}/v1/realtime", additional_headers=AUTH) as ws:
            assert (await recv(ws))["type"] == "session.created"
