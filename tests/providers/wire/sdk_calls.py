"""Each vendor operation as its official Python SDK performs it, with the SDK's defaults.

Every function takes the base URL of a local server (a capture server or an emulator) and a key,
makes the SDK's plain call and returns what the SDK returned (audio bytes, a transcript, events).
Exceptions propagate: against the capture server a caller ignores them (the request is recorded),
against an emulator they are the test's failure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from voicerouter.providers._common import wav_bytes
from voicerouter.testing.server import tone

TEXT = "Hello there, how are you today?"
ELEVEN_VOICE = "JBFqnCBsd6RMkjVDRZzb"  # the voice id of ElevenLabs' own quickstart
CARTESIA_VOICE = "694f9389-aac1-45b6-b726-9d9369183238"


def speech_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    return wav_bytes(tone(seconds, rate), rate)


async def openai_speech(url: str, key: str) -> bytes:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(api_key=key, base_url=url + "/v1", max_retries=0) as client:
        response = await client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input=TEXT)
        return response.content


async def openai_transcription(url: str, key: str) -> str:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(api_key=key, base_url=url + "/v1", max_retries=0) as client:
        result = await client.audio.transcriptions.create(model="gpt-4o-transcribe",
                                                          file=("turn.wav", speech_wav(), "audio/wav"))
        return result.text


async def openai_realtime(url: str, key: str) -> list[str]:
    """Connect, update the session, send a turn of audio, ask for a response, read to response.done."""
    import base64

    from openai import AsyncOpenAI

    seen: list[str] = []
    client = AsyncOpenAI(api_key=key, base_url=url + "/v1", max_retries=0)
    async with client.realtime.connect(model="gpt-realtime", max_retries=0) as connection:
        await connection.session.update(session={"type": "realtime", "output_modalities": ["audio"]})
        pcm = tone(1.0, 24000)
        await connection.input_audio_buffer.append(audio=base64.b64encode(pcm).decode())
        await connection.input_audio_buffer.commit()
        await connection.response.create()
        async with asyncio.timeout(10):
            async for event in connection:
                seen.append(event.type)
                if event.type in ("response.done", "error"):
                    break
    return seen


def _deepgram(url: str, key: str) -> Any:
    from deepgram import AsyncDeepgramClient
    from deepgram.environment import DeepgramClientEnvironment

    ws = "ws://" + url.removeprefix("http://")
    env = DeepgramClientEnvironment(base=url, production=ws, agent=ws, agent_rest=url)
    return AsyncDeepgramClient(api_key=key, environment=env)


async def deepgram_listen_file(url: str, key: str) -> str:
    response = await _deepgram(url, key).listen.v1.media.transcribe_file(request=speech_wav(), model="nova-3")
    return response.results.channels[0].alternatives[0].transcript


async def deepgram_listen_raw(url: str, key: str) -> str:
    """Raw linear16: `encoding` is a parameter of the SDK, `sample_rate` and `channels` go as extra query."""
    response = await _deepgram(url, key).listen.v1.media.transcribe_file(
        request=tone(1.0, 16000), model="nova-3", encoding="linear16",
        request_options={"additional_query_parameters": {"sample_rate": 16000, "channels": 1}})
    return response.results.channels[0].alternatives[0].transcript


async def deepgram_listen_live(url: str, key: str) -> list[Any]:
    """Stream a second of linear16, then CloseStream; collect the server's messages until it closes."""
    from websockets.exceptions import ConnectionClosed

    received: list[Any] = []
    async with _deepgram(url, key).listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000) as socket:
        pcm = tone(1.0, 16000)
        for offset in range(0, len(pcm), 3200):
            await socket.send_media(pcm[offset : offset + 3200])
        await socket.send_close_stream()
        with contextlib.suppress(ConnectionClosed, StopAsyncIteration):
            async with asyncio.timeout(10):
                async for message in socket:
                    received.append(message)
    return received


async def deepgram_speak(url: str, key: str) -> bytes:
    chunks = _deepgram(url, key).speak.v1.audio.generate(text=TEXT, model="aura-2-thalia-en")
    return b"".join([chunk async for chunk in chunks])


async def deepgram_speak_live(url: str, key: str) -> list[Any]:
    """The speak WebSocket: Speak, Flush, read to Flushed, Close."""
    from deepgram.speak.v1.types import SpeakV1Flush, SpeakV1Text

    received: list[Any] = []
    async with _deepgram(url, key).speak.v1.connect(model="aura-2-thalia-en", encoding="linear16",
                                                   sample_rate=24000) as socket:
        await socket.send_text(SpeakV1Text(text=TEXT))
        await socket.send_flush(SpeakV1Flush(type="Flush"))
        async with asyncio.timeout(10):
            while True:
                message = await socket.recv()
                received.append(message)
                if getattr(message, "type", None) == "Flushed":
                    break
        await socket.send_close()
    return received


async def elevenlabs_tts(url: str, key: str) -> bytes:
    from elevenlabs.client import AsyncElevenLabs

    client = AsyncElevenLabs(api_key=key, base_url=url)
    return b"".join([chunk async for chunk in client.text_to_speech.stream(ELEVEN_VOICE, text=TEXT)])


async def elevenlabs_stt(url: str, key: str) -> str:
    from elevenlabs.client import AsyncElevenLabs

    client = AsyncElevenLabs(api_key=key, base_url=url)
    result = await client.speech_to_text.convert(model_id="scribe_v1", file=("turn.wav", speech_wav(), "audio/wav"))
    return result.text


async def cartesia_tts(url: str, key: str) -> bytes:
    from cartesia import AsyncCartesia

    async with AsyncCartesia(api_key=key, base_url=url, max_retries=0) as client:
        response = await client.tts.generate(
            model_id="sonic-3", transcript=TEXT, voice=CARTESIA_VOICE,
            output_format={"container": "wav", "encoding": "pcm_f32le", "sample_rate": 44100},
        )
        return await response.read()


async def cartesia_tts_websocket(url: str, key: str) -> bytes:
    """A context on the TTS WebSocket: two pushed pieces (continuations), no_more_inputs, read to done."""
    import base64

    from cartesia import AsyncCartesia

    audio = b""
    ws = "ws://" + url.removeprefix("http://")
    async with AsyncCartesia(api_key=key, base_url=url, websocket_base_url=ws, max_retries=0) as client:
        async with client.tts.websocket_connect() as connection:
            context = connection.context(model_id="sonic-3", voice=CARTESIA_VOICE, output_format={
                "container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000})
            await context.push("Hello there, ")
            await context.push("how are you today?")
            await context.no_more_inputs()
            async with asyncio.timeout(10):
                async for event in context.receive():
                    if event.type == "chunk":
                        audio += base64.b64decode(event.data)
                    if event.type in ("done", "error"):
                        break
    return audio


def _elevenlabs_stream_input(url: str, key: str) -> bytes:
    from elevenlabs.client import ElevenLabs

    def pieces():
        yield "Hello there, "
        yield "how are you today?"

    client = ElevenLabs(api_key=key, base_url=url)
    # The SDK always derives wss:// from the base URL; a plain-text loopback server needs ws://.
    client.text_to_speech._ws_base_url = "ws://" + url.removeprefix("http://")
    return b"".join(client.text_to_speech.convert_realtime(ELEVEN_VOICE, text=pieces()))


async def elevenlabs_stream_input(url: str, key: str) -> bytes:
    """The SDK's input-streaming call (`convert_realtime`, a sync generator), run off the loop."""
    return await asyncio.to_thread(_elevenlabs_stream_input, url, key)


async def gemini_live(url: str, key: str) -> list[Any]:
    """A Live session with activity detection off: setup, history, one framed turn of audio, read to turnComplete."""
    from google import genai
    from google.genai import types

    client = genai.Client(api_key=key, http_options={"base_url": url})
    # The SDK always derives wss:// (with an SSL context) from the base URL; loopback is plain ws://.
    client._api_client._websocket_base_url = lambda http_options=None: "ws://" + url.removeprefix("http://")
    client._api_client._websocket_ssl_ctx = {}
    config = types.LiveConnectConfig(
        response_modalities=["AUDIO"], input_audio_transcription={}, output_audio_transcription={},
        realtime_input_config={"automatic_activity_detection": {"disabled": True}},
        system_instruction="Answer briefly.")
    received: list[Any] = []
    async with client.aio.live.connect(model="gemini-live-2.5-flash-preview", config=config) as session:
        await session.send_client_content(turns=[{"role": "user", "parts": [{"text": "hi"}]},
                                                 {"role": "model", "parts": [{"text": "hello"}]}],
                                          turn_complete=False)
        await session.send_realtime_input(activity_start=types.ActivityStart())
        pcm = tone(1.0, 16000)
        for offset in range(0, len(pcm), 3200):
            await session.send_realtime_input(audio=types.Blob(data=pcm[offset : offset + 3200],
                                                               mime_type="audio/pcm;rate=16000"))
        await session.send_realtime_input(activity_end=types.ActivityEnd())
        async with asyncio.timeout(10):
            async for message in session.receive():
                received.append(message)
                if message.server_content and message.server_content.turn_complete:
                    break
    return received


async def assemblyai_streaming(url: str, key: str) -> list[Any]:
    """The async streaming client: connect, a second of 16 kHz audio in 50 ms frames at real time, terminate."""
    from assemblyai.streaming.v3 import (
        AsyncStreamingClient,
        StreamingClientOptions,
        StreamingEvents,
        StreamingParameters,
    )

    events: list[Any] = []
    client = AsyncStreamingClient(StreamingClientOptions(api_key=key, api_host="ws://" + url.removeprefix("http://")))
    for kind in (StreamingEvents.Begin, StreamingEvents.Turn, StreamingEvents.Termination, StreamingEvents.Error):
        client.on(kind, lambda _client, event: events.append(event))
    await client.connect(StreamingParameters(sample_rate=16000, speech_model="universal-streaming-english"))
    pcm = tone(1.0, 16000)
    for offset in range(0, len(pcm), 1600):
        await client.stream(pcm[offset : offset + 1600])
        await asyncio.sleep(0.05)
    await client.disconnect(terminate=True)
    return events


SDK_CALLS: dict[str, Callable[[str, str], Awaitable[Any]]] = {
    "openai.speech": openai_speech,
    "openai.transcription": openai_transcription,
    "openai.realtime": openai_realtime,
    "deepgram.listen_file": deepgram_listen_file,
    "deepgram.listen_live": deepgram_listen_live,
    "deepgram.speak": deepgram_speak,
    "elevenlabs.tts": elevenlabs_tts,
    "elevenlabs.stt": elevenlabs_stt,
    "cartesia.tts": cartesia_tts,
    "cartesia.tts_websocket": cartesia_tts_websocket,
    "deepgram.speak_live": deepgram_speak_live,
    "elevenlabs.stream_input": elevenlabs_stream_input,
    "gemini.live": gemini_live,
    "assemblyai.streaming": assemblyai_streaming,
}
