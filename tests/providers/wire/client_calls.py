"""The same operations as `sdk_calls`, made by voicerouter's provider clients from a table entry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from voicerouter.config.schema import ProviderConfig
from voicerouter.providers.base import AudioChunk, BuildContext, Conversation
from voicerouter.providers.registry import get_type
from voicerouter.testing.server import tone
from wire.sdk_calls import CARTESIA_VOICE, ELEVEN_VOICE, SDK_CALLS, TEXT


def build(type_: str, kind: str, base_url: str, key: str, **fields: Any) -> Any:
    config = ProviderConfig(type=type_, kind=kind, api_key="${WIRE_KEY}", base_url=base_url, **fields)
    return get_type(type_).build("wire", kind, config, BuildContext(env={"WIRE_KEY": key}))  # type: ignore[union-attr]


async def _synthesize(tts: Any) -> bytes:
    try:
        return b"".join([chunk.pcm async for chunk in tts.synthesize(TEXT)])
    finally:
        await tts.aclose()


async def _transcribe(stt: Any) -> str:
    try:
        return (await stt.transcribe(AudioChunk(tone(1.0, 16000), 16000))).text
    finally:
        await stt.aclose()


async def _stream(stt: Any) -> str:
    try:
        stream = await stt.open_stream(16000)
        try:
            pcm = tone(1.0, 16000)
            for offset in range(0, len(pcm), 640):
                await stream.send(pcm[offset : offset + 640])
            return (await stream.finish()).text
        finally:
            await stream.aclose()
    finally:
        await stt.aclose()


async def _s2s_turn(provider: Any, instructions: str | None, history: Conversation) -> list[str]:
    """One spoken turn (a second of tone in 20 ms frames) and the types of the events of the reply."""
    session = await provider.connect(instructions=instructions, history=history)
    try:
        pcm = tone(1.0, 16000)
        for offset in range(0, len(pcm), 640):
            await session.send_audio(pcm[offset : offset + 640], 16000)
        return [event.type async for event in session.respond()]
    finally:
        await session.aclose()


async def openai_speech(url: str, key: str) -> bytes:
    return await _synthesize(build("openai", "tts", url + "/v1", key, model="gpt-4o-mini-tts", voice="alloy"))


async def openai_transcription(url: str, key: str) -> str:
    return await _transcribe(build("openai", "stt", url + "/v1", key, model="gpt-4o-transcribe"))


async def openai_realtime(url: str, key: str) -> list[str]:
    return await _s2s_turn(build("openai-realtime", "s2s", url + "/v1", key), None, Conversation())


async def deepgram_listen_file(url: str, key: str) -> str:
    return await _transcribe(build("deepgram", "stt", url, key, model="nova-3"))


async def deepgram_listen_live(url: str, key: str) -> str:
    return await _stream(build("deepgram", "stt", url, key, model="nova-3"))


async def deepgram_speak(url: str, key: str) -> bytes:
    return await _synthesize(build("deepgram", "tts", url, key, model="aura-2-thalia-en"))


async def elevenlabs_tts(url: str, key: str) -> bytes:
    return await _synthesize(build("elevenlabs", "tts", url, key, voice=ELEVEN_VOICE))


async def elevenlabs_stt(url: str, key: str) -> str:
    return await _transcribe(build("elevenlabs", "stt", url, key, model="scribe_v1"))


async def cartesia_tts(url: str, key: str) -> bytes:
    return await _synthesize(build("cartesia", "tts", url, key, voice=CARTESIA_VOICE, model="sonic-3"))


async def _socket_tts(type_: str, url: str, key: str, **fields: Any) -> bytes:
    tts = build(type_, "tts", url, key, options={"transport": "websocket"}, **fields)

    async def pieces():
        yield "Hello there, "
        yield "how are you today?"

    try:
        return b"".join([chunk.pcm async for chunk in tts.synthesize_stream(pieces())])
    finally:
        await tts.aclose()


async def cartesia_tts_websocket(url: str, key: str) -> bytes:
    return await _socket_tts("cartesia", url, key, voice=CARTESIA_VOICE, model="sonic-3")


async def deepgram_speak_live(url: str, key: str) -> bytes:
    return await _socket_tts("deepgram", url, key, model="aura-2-thalia-en")


async def elevenlabs_stream_input(url: str, key: str) -> bytes:
    return await _socket_tts("elevenlabs", url, key, voice=ELEVEN_VOICE)


async def gemini_live(url: str, key: str) -> list[str]:
    history = Conversation()
    history.add("user", "hi")
    history.add("assistant", "hello")
    return await _s2s_turn(build("gemini-live", "s2s", url, key), "Answer briefly.", history)


async def assemblyai_streaming(url: str, key: str) -> str:
    return await _stream(build("assemblyai", "stt", url, key))


# The operations of SDK_CALLS, the one list of what is compared: each is made here by the function
# of the same name (an operation without one fails at import).
CLIENT_CALLS: dict[str, Callable[[str, str], Awaitable[Any]]] = {
    op: globals()[sdk_call.__name__] for op, sdk_call in SDK_CALLS.items()
}

# Vendor ids in paths, replaced by placeholders before comparing.
PLACEHOLDERS = {"voice_id": ELEVEN_VOICE}


async def script(record: Any, send: Callable[[Any], Awaitable[None]]) -> None:
    """What the capture server says on a WebSocket so a client gets as far as its first messages."""
    if record.path.endswith("/realtime"):
        await send({"type": "session.created", "event_id": "event_1", "session": {"type": "realtime"}})
        await asyncio.sleep(0.2)
        await send({"type": "session.updated", "event_id": "event_2", "session": {"type": "realtime"}})
    if record.path == "/v3/ws":
        await send({"type": "Begin", "id": "00000000-0000-0000-0000-000000000000", "expires_at": 2000000000})
    if "BidiGenerateContent" in record.path:
        await asyncio.sleep(0.1)
        await send({"setupComplete": {}})


async def run_against_capture(call: Callable[[str, str], Awaitable[Any]], key: str, deadline_s: float = 20.0) -> Any:
    """Make one call against a fresh capture server and return its first captured request, once the
    request (and on a WebSocket, its first messages) arrived; the call's own outcome is ignored."""
    from wire.capture import capture

    async with capture(script=script) as cap:
        task = asyncio.ensure_future(call(cap.url, key))
        try:
            async with asyncio.timeout(deadline_s):
                while not task.done() and not (cap.records and (not cap.records[0].websocket
                                                                or len(cap.records[0].messages) >= 2)):
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    assert cap.records, "the call sent nothing"
    return cap.records[0]
