"""A Cartesia emulator: POST /tts/bytes in every output_format (raw, wav, mp3) and the /tts/websocket
(contexts, continuations, cancel), versioned like the vendor.

It needs `Cartesia-Version` and `X-API-Key` (or `Authorization: Bearer`); errors are JSON
`{error_code, title, message, request_id}` for versions from 2026-03-01 and `Title: Message` text before.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from voicerouter.testing import codecs
from voicerouter.testing.server import EmulatorState, Fault, abort_transport, stream_pcm, stream_ws_audio

STATE = web.AppKey("state", EmulatorState)
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
ENCODINGS = ("pcm_f32le", "pcm_s16le", "pcm_mulaw", "pcm_alaw")
JSON_ERRORS_FROM = "2026-03-01"
VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TITLES = {400: ("invalid_request", "Bad Request"), 401: ("unauthorized", "Unauthorized"),
           402: ("payment_required", "Payment Required"), 403: ("forbidden", "Forbidden"),
           404: ("not_found", "Not Found"), 415: ("unsupported_media_type", "Unsupported Media Type"),
           429: ("concurrency_limited", "Too many concurrent requests")}


def build_app(state: EmulatorState) -> web.Application:
    app = web.Application(client_max_size=8 * 2**20)
    app[STATE] = state
    app.router.add_post("/tts/bytes", _tts_bytes)
    app.router.add_get("/tts/websocket", _tts_websocket)
    return app


def _error(request: web.Request, status: int, message: str | None = None,
           retry_after: str | None = None) -> web.Response:
    code, title = _TITLES.get(status, ("internal_error", "Internal Server Error"))
    message = message or ("Something went wrong, please retry." if status >= 500 else f"{title}.")
    if status == 429:
        message = "You have exceeded your plan's concurrency limit."
    headers = {"Retry-After": retry_after} if retry_after else {}
    version = request.headers.get("Cartesia-Version", "")
    if VERSION.match(version) and version >= JSON_ERRORS_FROM:
        body = {"error_code": code, "title": title, "message": message, "request_id": str(uuid.uuid4())}
        return web.json_response(body, status=status, headers=headers)
    return web.Response(text=f"{title}: {message}", status=status, headers=headers)


def _key(request: web.Request) -> str | None:
    key = request.headers.get("X-API-Key")
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token
    if request.method == "GET":  # WebSockets from browsers: ?api_key= (older) or ?access_token=
        return request.query.get("api_key") or request.query.get("access_token")
    return None


def _voice_id(voice: object, version: str) -> str | None:
    if isinstance(voice, dict) and voice.get("mode", "id") == "id" and isinstance(voice.get("id"), str):
        if "mode" in voice or version >= "2026-08-14":
            return voice["id"]
    if isinstance(voice, str) and version >= "2026-08-14":
        return voice
    return None


async def _tts_bytes(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    raw = await request.read()
    state.record(path=request.path, method="POST", headers=dict(request.headers), body=raw.decode("utf-8", "replace"))
    version = request.headers.get("Cartesia-Version")
    if _key(request) != state.api_key:
        return _error(request, 401, "Invalid API key." if _key(request) else "Missing API key.")
    if not version or not VERSION.match(version):
        return _error(request, 400, "A valid Cartesia-Version header (YYYY-MM-DD) is required.")
    fault = state.take_fault()
    if fault is not None and fault.kind == "error":
        return _error(request, fault.status, retry_after=fault.retry_after)
    if not request.headers.get("Content-Type", "").startswith("application/json"):
        return _error(request, 415, "Content-Type must be application/json.")
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        return _error(request, 400, "Request body is not a JSON object.")
    transcript = body.get("transcript")
    if not isinstance(transcript, str) or not transcript.strip():
        return _error(request, 400, "transcript is required and must not be empty.")
    if not isinstance(body.get("model_id"), str):
        return _error(request, 400, "model_id is required.")
    if _voice_id(body.get("voice"), version) is None:
        return _error(request, 400, f"voice is not a valid voice specifier for Cartesia-Version {version}.")
    if "language" in body and "locale" in body:
        return _error(request, 400, "language and locale are mutually exclusive.")
    fmt = body.get("output_format")
    if not isinstance(fmt, dict):
        return _error(request, 400, "output_format is required.")
    container, encoding, rate = fmt.get("container"), fmt.get("encoding"), fmt.get("sample_rate")
    if container not in ("raw", "wav", "mp3"):
        return _error(request, 400, f"output_format.container must be raw, wav or mp3, not {container!r}.")
    if rate not in PCM_RATES:
        return _error(request, 400, f"output_format.sample_rate {rate!r} is not supported.")
    if container == "mp3":
        if fmt.get("bit_rate") not in (32000, 64000, 96000, 128000, 192000):
            return _error(request, 400, "output_format.bit_rate is required for mp3.")
        audio_format = codecs.AudioFormat("mp3", rate)
    elif encoding not in ENCODINGS:
        return _error(request, 400, f"output_format.encoding {encoding!r} is not supported for {container}.")
    else:
        audio_format = codecs.AudioFormat(container, rate, encoding)
    audio = codecs.encode(await state.synthesize(transcript, rate), audio_format)
    return await stream_pcm(request, audio, rate, fault, content_type=audio_format.content_type)


# --- /tts/websocket -------------------------------------------------------------------------------

CLAUSE_END = re.compile(r"[.,!?;:][\"')\]]*\s*$")


@dataclass
class _Context:
    """One context: its first message's settings, text not yet spoken, and the worker speaking it."""

    id: str
    settings: dict[str, Any]
    fault: Fault | None
    timestamps: bool = False
    spoken_s: float = 0.0  # audio generated so far in this context
    buffer: str = ""
    first_text_at: float | None = None
    ending: bool = False
    segments: asyncio.Queue = field(default_factory=asyncio.Queue)
    worker: asyncio.Task | None = None


async def _tts_websocket(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    version = request.query.get("cartesia_version") or request.headers.get("Cartesia-Version") or ""
    messages: list[dict[str, Any]] = []  # what the client sends on this socket, for assertions
    state.record(path=request.path, method="GET", websocket=True, query=dict(request.query),
                 headers=dict(request.headers), messages=messages)
    if _key(request) != state.api_key:
        return _error(request, 401, "Invalid API key." if _key(request) else "Missing API key.")
    if not VERSION.match(version):
        return _error(request, 400, "A valid Cartesia-Version (header or cartesia_version) is required.")
    fault = state.take_fault()
    if fault is not None and fault.kind == "error":
        return _error(request, fault.status, retry_after=fault.retry_after)
    ws = web.WebSocketResponse(heartbeat=None)
    await ws.prepare(request)
    socket = _Socket(state, ws, version, abort_transport(request), pending=fault)
    socket.messages = messages
    try:
        await socket.serve()
    finally:
        await socket.stop()
    return ws


class _Socket:
    def __init__(self, state: EmulatorState, ws: web.WebSocketResponse, version: str, abort: Any,
                 pending: Fault | None) -> None:
        self.state, self.ws, self.version, self.abort = state, ws, version, abort
        self.pending = pending  # a fault taken at the upgrade applies to the first context
        self.contexts: dict[str, _Context] = {}
        self.cancelled: set[str] = set()
        self.messages: list[dict[str, Any]] = []

    async def serve(self) -> None:
        from aiohttp import WSMsgType

        async for message in self.ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                event = json.loads(message.data)
                if not isinstance(event, dict):
                    raise ValueError
            except ValueError:
                await self.error(None, 400, "Message is not a JSON object.")
                continue
            self.messages.append(event)
            await self.handle(event)

    async def stop(self) -> None:
        for context in self.contexts.values():
            if context.worker is not None:
                context.worker.cancel()

    async def send(self, event: dict[str, Any]) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await self.ws.send_str(json.dumps(event))

    async def error(self, context_id: str | None, status: int, message: str) -> None:
        code, title = _TITLES.get(status, ("internal_error", "Internal Server Error"))
        if self.version >= JSON_ERRORS_FROM:
            event = {"type": "error", "done": True, "status_code": status, "error_code": code, "title": title,
                     "message": message, "request_id": str(uuid.uuid4())}
        else:
            event = {"type": "error", "done": True, "status_code": status, "error": f"{title}: {message}"}
        if context_id is not None:
            event["context_id"] = context_id
        await self.send(event)

    async def handle(self, event: dict[str, Any]) -> None:
        context_id = event.get("context_id")
        if event.get("cancel") is True:
            if isinstance(context_id, str):
                self.cancelled.add(context_id)
                context = self.contexts.pop(context_id, None)
                if context is not None and context.worker is not None:
                    context.worker.cancel()  # no more messages for a cancelled context
            return
        if not isinstance(context_id, str) or not context_id:
            await self.error(None, 400, "context_id is required.")
            return
        if context_id in self.cancelled:
            return
        problem = self.invalid(event)
        if problem:
            await self.error(context_id, 400, problem)
            return
        context = self.contexts.get(context_id)
        if context is None:
            fault, self.pending = (self.pending, None) if self.pending is not None else (self.state.take_fault(), None)
            context = _Context(context_id, {k: event.get(k) for k in ("model_id", "voice", "output_format")}, fault,
                               timestamps=bool(event.get("add_timestamps")))
            self.contexts[context_id] = context
            context.worker = asyncio.create_task(self.speak(context))
        elif context.ending:
            await self.error(context_id, 400, "Context has already been closed with continue: false.")
            return
        elif any(context.settings[k] != event.get(k) for k in context.settings):
            await self.error(context_id, 400, "Continuations must keep model_id, voice and output_format.")
            return
        context.buffer += event["transcript"]
        if context.first_text_at is None and event["transcript"]:
            context.first_text_at = time.monotonic()
        delay_ms = event.get("max_buffer_delay_ms")
        if not event.get("continue", False):
            context.ending = True
        if context.ending or event.get("flush") or not delay_ms or CLAUSE_END.search(context.buffer):
            self.release(context)
        elif delay_ms:
            asyncio.get_running_loop().call_later(int(delay_ms) / 1000, self.release_if_waiting, context,
                                                  context.first_text_at)

    def invalid(self, event: dict[str, Any]) -> str | None:
        if not isinstance(event.get("transcript"), str):
            return "transcript is required."
        if not isinstance(event.get("model_id"), str):
            return "model_id is required."
        if _voice_id(event.get("voice"), self.version) is None:
            return f"voice is not a valid voice specifier for Cartesia-Version {self.version}."
        fmt = event.get("output_format")
        if not isinstance(fmt, dict) or fmt.get("container") != "raw" or fmt.get("encoding") not in ENCODINGS \
                or fmt.get("sample_rate") not in PCM_RATES:
            return "output_format must be raw with a supported encoding and sample_rate."
        return None

    def release(self, context: _Context) -> None:
        """Buffered text becomes a segment to speak now (with `None` after the last one)."""
        if context.buffer.strip():
            context.segments.put_nowait(context.buffer)
        context.buffer, context.first_text_at = "", None
        if context.ending:
            context.segments.put_nowait(None)

    def release_if_waiting(self, context: _Context, since: float | None) -> None:
        if context.first_text_at is not None and context.first_text_at == since:
            self.release(context)  # max_buffer_delay_ms elapsed without a clause boundary

    def word_timestamps(self, context: _Context, segment: str, seconds: float) -> dict[str, Any]:
        """Word starts and ends (seconds from the context's first audio), spread by characters over the segment."""
        per_char = seconds / max(1, len(segment))
        words, starts, ends = [], [], []
        for match in re.finditer(r"\S+", segment):
            words.append(match.group())
            starts.append(round(context.spoken_s + match.start() * per_char, 3))
            ends.append(round(context.spoken_s + match.end() * per_char, 3))
        return {"type": "timestamps", "context_id": context.id, "done": False, "status_code": 206,
                "word_timestamps": {"words": words, "start": starts, "end": ends}}

    async def speak(self, context: _Context) -> None:
        fmt = context.settings["output_format"]
        rate = fmt["sample_rate"]
        audio_format = codecs.AudioFormat("raw", rate, fmt["encoding"])
        fault = context.fault
        if fault is not None and fault.kind == "error":
            await self.error(context.id, fault.status, "The generation failed.")
            return
        if fault is not None and fault.kind == "malformed":
            await self.ws.send_str("<html>502 Bad Gateway</html>")
            return
        started = time.monotonic()
        while (segment := await context.segments.get()) is not None:
            speech = await self.state.synthesize(segment, rate)
            if context.timestamps:
                await self.send(self.word_timestamps(context, segment, len(speech) / 2 / rate))
            context.spoken_s += len(speech) / 2 / rate
            pcm = codecs.encode(speech, audio_format)

            async def chunk(data: bytes) -> None:
                await self.send({"type": "chunk", "context_id": context.id, "data": base64.b64encode(data).decode(),
                                 "done": False, "status_code": 206,
                                 "step_time": round((time.monotonic() - started) * 1000, 3)})

            if not await stream_ws_audio(pcm, rate, chunk, fault, self.abort):
                return
            fault = None  # the fault hits the context's first segment only
        await self.send({"type": "done", "context_id": context.id, "done": True, "status_code": 206})
        self.contexts.pop(context.id, None)
