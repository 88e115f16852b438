"""A wire-compatible emulator of the Gemini Live API (BidiGenerateContent over WebSocket).

The first client message must be `setup`; the server answers `setupComplete`. Audio arrives as
`realtimeInput.audio` blobs (`audio/pcm;rate=N`), framed by `activityStart`/`activityEnd` when
activity detection is disabled (as voicerouter and most telephony stacks do); `clientContent`
turns add history, and `turnComplete: true` asks for a reply to them. The "model" transcribes the
turn and answers "You said: <transcript>": `serverContent` with `inputTranscription`, model audio
parts (`audio/pcm;rate=24000`) interleaved with `outputTranscription`, then `generationComplete`
and `turnComplete`. A new `activityStart` during a reply interrupts it (`interrupted`, then
`turnComplete`).

Auth: `x-goog-api-key` header or `?key=`. A wrong key is refused the way the service reports it on
an open socket, with close code 1008 (how a refused *upgrade* looks is not documented; `error:STATUS`
faults refuse it with that HTTP status). Faults on a reply: `drop` cuts the TCP connection halfway,
`stall` pauses there, `hang` never answers, `malformed` sends a non-JSON frame, `error:429` closes
with 1011 RESOURCE_EXHAUSTED and other statuses with 1011 internal error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from voicerouter.testing.server import EmulatorState, Fault, abort_transport, stream_ws_audio

STATE = web.AppKey("state", EmulatorState)
OUTPUT_RATE = 24000
PATH = re.compile(r"^/ws/google\.ai\.generativelanguage\.(v1|v1beta|v1alpha)\.GenerativeService\."
                  r"BidiGenerateContent(Constrained)?$")


def build_app(state: EmulatorState) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/ws/{method}", _live)
    return app


def proto_bytes(text: str) -> bytes:
    """A proto-JSON `bytes` field: standard or URL-safe base64, padded or not (the SDK sends URL-safe)."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _get(obj: dict[str, Any], camel: str) -> Any:
    """A field by its proto-JSON name or its snake_case spelling (the SDK sends both)."""
    if camel in obj:
        return obj[camel]
    return obj.get(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel))


async def _live(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    messages: list[dict[str, Any]] = []
    state.record(path=request.path, method="GET", websocket=True, query=dict(request.query),
                 headers=dict(request.headers), messages=messages)
    if not PATH.match(request.path):
        return web.json_response({"error": {"code": 404, "message": "Not found.", "status": "NOT_FOUND"}}, status=404)
    fault = state.take_fault()
    if fault is not None and fault.kind == "error":
        return web.json_response({"error": {"code": fault.status, "message": "Request failed.",
                                            "status": "UNAVAILABLE" if fault.status >= 500 else "INVALID_ARGUMENT"}},
                                 status=fault.status)
    if fault is not None and fault.kind == "slow":
        await asyncio.sleep(fault.seconds)
        fault = None
    ws = web.WebSocketResponse(heartbeat=None, max_msg_size=2**24)
    await ws.prepare(request)
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    session = _Session(state, ws, messages, abort_transport(request), fault)
    if key != state.api_key:
        await ws.close(code=1008, message=b"API key not valid. Please pass a valid API key.")
        return ws
    try:
        await session.serve()
    except ConnectionResetError:
        pass
    finally:
        session.stop()
    return ws


class _Session:
    def __init__(self, state: EmulatorState, ws: web.WebSocketResponse, messages: list[dict[str, Any]],
                 abort: Any, fault: Fault | None) -> None:
        self.state, self.ws, self.messages, self.abort = state, ws, messages, abort
        self.pending = fault  # a fault taken at the upgrade hits the first reply
        self.setup: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.audio = bytearray()
        self.audio_rate = 16000
        self.in_activity = False
        self.replying: asyncio.Task | None = None

    def stop(self) -> None:
        if self.replying is not None:
            self.replying.cancel()

    async def send(self, message: dict[str, Any]) -> None:
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(message))

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode()[:120])

    async def serve(self) -> None:
        async for frame in self.ws:
            if frame.type != WSMsgType.TEXT:
                await self.close(1007, "Binary frames are not accepted; send JSON messages.")
                return
            try:
                message = json.loads(frame.data)
                if not isinstance(message, dict):
                    raise ValueError
            except ValueError:
                await self.close(1007, "Invalid JSON payload received.")
                return
            self.messages.append(message)
            if self.setup is None:
                setup = _get(message, "setup")
                if not isinstance(setup, dict) or not str(setup.get("model", "")).startswith("models/"):
                    await self.close(1007, "The first message must be a setup with a models/ model name.")
                    return
                self.setup = setup
                await self.send({"setupComplete": {"sessionId": uuid.uuid4().hex}})
                continue
            if not await self.handle(message):
                return

    async def handle(self, message: dict[str, Any]) -> bool:
        content = _get(message, "clientContent")
        realtime = _get(message, "realtimeInput")
        if content is not None:
            self.history.extend(content.get("turns") or [])
            if _get(content, "turnComplete"):
                self.start_reply(transcript=None)
            return True
        if realtime is None:
            return True  # toolResponse and the rest: nothing to do here
        if _get(realtime, "activityStart") is not None:
            if self.replying is not None and not self.replying.done():
                self.replying.cancel()  # the user talks over the reply: it is interrupted
                await self.send({"serverContent": {"interrupted": True}})
                await self.send({"serverContent": {"turnComplete": True}})
            self.in_activity = True
            self.audio.clear()
        audio = _get(realtime, "audio")
        if audio is not None:
            try:
                self.audio += proto_bytes(audio.get("data") or "")
            except (binascii.Error, ValueError):
                await self.close(1007, "Invalid value at 'realtime_input.audio.data' (TYPE_BYTES).")
                return False
            rate = re.search(r"rate=(\d+)", str(_get(audio, "mimeType") or ""))
            self.audio_rate = int(rate.group(1)) if rate else 16000
        if _get(realtime, "activityEnd") is not None:
            if not self.in_activity:
                await self.close(1007, "activityEnd without activityStart.")
                return False
            self.in_activity = False
            pcm = bytes(self.audio)
            self.audio.clear()
            self.messages[-1]["audio_s"] = len(pcm) / 2 / self.audio_rate  # what was heard, for assertions
            transcript = await self.state.transcribe(pcm, self.audio_rate)
            self.history.append({"role": "user", "parts": [{"text": transcript}]})
            self.start_reply(transcript=transcript)
        return True

    def start_reply(self, transcript: str | None) -> None:
        self.replying = asyncio.create_task(self.reply(transcript))

    def reply_text(self) -> str:
        for turn in reversed(self.history):
            if turn.get("role") == "user":
                return "You said: " + " ".join(p.get("text", "") for p in turn.get("parts") or []).strip()
        return "Hello."

    async def reply(self, transcript: str | None) -> None:
        fault = self.pending or self.state.take_fault()
        self.pending = None
        setup = self.setup or {}
        if transcript is not None and _get(setup, "inputAudioTranscription") is not None:
            await self.send({"serverContent": {"inputTranscription": {"text": transcript}}})
        if fault is not None and fault.kind == "error":
            await self.close(1011, "RESOURCE_EXHAUSTED: quota exceeded." if fault.status == 429
                             else "Internal error encountered.")
            return
        if fault is not None and fault.kind == "malformed":
            await self.ws.send_str("<html>502 Bad Gateway</html>")
            return
        text = self.reply_text()
        pcm = await self.state.synthesize(text, OUTPUT_RATE)
        words = text.split(" ")
        total = max(1, len(pcm) // (OUTPUT_RATE * 2 // 50))  # ~20 ms pieces
        sent = [0, 0]  # pieces sent, words sent
        transcribe_output = _get(setup, "outputAudioTranscription") is not None

        async def piece(data: bytes) -> None:
            sent[0] += 1
            content: dict[str, Any] = {"modelTurn": {"parts": [
                {"inlineData": {"mimeType": f"audio/pcm;rate={OUTPUT_RATE}", "data": base64.b64encode(data).decode()}}]}}
            upto = len(words) * sent[0] // total
            if transcribe_output and upto > sent[1]:
                said = " ".join(words[sent[1]:upto])
                content["outputTranscription"] = {"text": said if sent[1] == 0 else " " + said}
                sent[1] = upto
            await self.send({"serverContent": content})

        if not await stream_ws_audio(pcm, OUTPUT_RATE, piece, fault, self.abort):
            return
        if transcribe_output and sent[1] < len(words):
            rest = " ".join(words[sent[1]:])
            await self.send({"serverContent": {"outputTranscription": {"text": rest if sent[1] == 0 else " " + rest}}})
        self.history.append({"role": "model", "parts": [{"text": text}]})
        await self.send({"serverContent": {"generationComplete": True}})
        await self.send({"serverContent": {"turnComplete": True}})
        with contextlib.suppress(ConnectionResetError):
            await self.send({"usageMetadata": {"promptTokenCount": len(words), "responseTokenCount": len(words),
                                               "totalTokenCount": 2 * len(words)}})
