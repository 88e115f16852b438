"""An ElevenLabs emulator: /v1/text-to-speech/{voice}[/stream] in every output_format, the stream-input
WebSocket (text in as it streams, audio out by the chunk schedule or on flush), and /v1/speech-to-text.

It checks `xi-api-key`, validates like the vendor (FastAPI 422 `detail` lists for missing fields,
`detail: {status, message}` for the rest) and streams the audio in small chunks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from typing import Any

from aiohttp import web

from voicerouter.testing import codecs
from voicerouter.testing.server import (
    EmulatorState,
    Fault,
    abort_transport,
    admit,
    send_body,
    stream_pcm,
    stream_ws_audio,
)

STATE = web.AppKey("state", EmulatorState)
PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
MP3_FORMATS = {"mp3_22050_32", "mp3_24000_48", *(f"mp3_44100_{k}" for k in (32, 64, 96, 128, 192))}
OPUS_FORMATS = {f"opus_48000_{k}" for k in (32, 64, 96, 128, 192)}
CHAR_LIMITS = {"eleven_flash_v2_5": 40000, "eleven_turbo_v2_5": 40000, "eleven_flash_v2": 30000,
               "eleven_turbo_v2": 30000, "eleven_multilingual_v2": 10000, "eleven_v3": 5000}
STT_MODELS = ("scribe_v1", "scribe_v2")
VOICE_ID = re.compile(r"^[A-Za-z0-9]{20}$")
_STATUSES = {400: "invalid_request", 401: "invalid_api_key", 403: "only_for_creator+", 404: "not_found",
             429: "too_many_concurrent_requests"}


def build_app(state: EmulatorState) -> web.Application:
    app = web.Application(client_max_size=64 * 2**20)
    app[STATE] = state
    app.router.add_post("/v1/text-to-speech/{voice_id}", _tts)
    app.router.add_post("/v1/text-to-speech/{voice_id}/stream", _tts)
    app.router.add_post("/v1/speech-to-text", _stt)
    app.router.add_get("/v1/text-to-speech/{voice_id}/stream-input", _stream_input)
    return app


def _detail(status: int, code: str | None = None, message: str | None = None,
            retry_after: str | None = None) -> web.Response:
    code = code or _STATUSES.get(status, "internal_error" if status >= 500 else "invalid_request")
    message = message or ("System is busy, please retry." if status >= 500 else f"Request failed ({code}).")
    headers = {"request-id": uuid.uuid4().hex}
    if retry_after:
        headers["Retry-After"] = retry_after
    return web.json_response({"detail": {"status": code, "message": message}}, status=status, headers=headers)


def _invalid(*problems: tuple[list[str], str, str]) -> web.Response:
    """FastAPI's 422: one {loc, msg, type} per invalid field."""
    detail = [{"loc": loc, "msg": msg, "type": kind} for loc, msg, kind in problems]
    return web.json_response({"detail": detail}, status=422)


def _check(request: web.Request, state: EmulatorState) -> web.Response | None:
    """The `xi-api-key` check, answered with the vendor's envelope (401 missing or wrong)."""
    key = request.headers.get("xi-api-key")
    if not key:
        return _detail(401, "needs_authorization",
                       "Neither authorization header nor xi-api-key received, please provide one.")
    if key != state.api_key:
        return _detail(401, "invalid_api_key", "Invalid API key")
    return None


def _fault_detail(fault: Fault) -> web.Response | None:
    """An `error` fault, answered with the vendor's envelope."""
    return _detail(fault.status, retry_after=fault.retry_after) if fault.kind == "error" else None


async def _tts(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    raw = await request.read()
    voice = request.match_info["voice_id"]
    state.record(path=request.path, method="POST", query=dict(request.query), headers=dict(request.headers),
                 body=raw.decode("utf-8", "replace"))
    fault, refused = admit(state, _check(request, state), _fault_detail)
    if refused is not None:
        return refused
    output_format = request.query.get("output_format", "mp3_44100_128")
    fmt = output_format_of(output_format)
    if fmt is None:
        return _invalid((["query", "output_format"], f"Input should be a valid output format, got {output_format!r}",
                         "enum"))
    if not request.headers.get("Content-Type", "").startswith("application/json"):
        return _invalid((["body"], "Input should be a valid JSON object", "model_attributes_type"))
    try:
        body = json.loads(raw)
    except ValueError:
        return _invalid((["body"], "JSON decode error", "json_invalid"))
    if not isinstance(body, dict):
        return _invalid((["body"], "Input should be a valid dictionary", "dict_type"))
    text = body.get("text")
    if not isinstance(text, str):
        return _invalid((["body", "text"], "Field required", "missing"))
    if not text.strip():
        return _detail(400, "empty_text", "Text must not be empty.")
    model = body.get("model_id", "eleven_multilingual_v2")
    if model not in CHAR_LIMITS:
        return _detail(400, "model_not_found", f"A model with model ID {model} does not exist.")
    if len(text) > CHAR_LIMITS[model]:
        return _detail(400, "max_character_limit_exceeded",
                       f"Text is {len(text)} characters; {model} allows {CHAR_LIMITS[model]}.")
    settings = body.get("voice_settings")
    if settings is not None and not isinstance(settings, dict):
        return _invalid((["body", "voice_settings"], "Input should be a valid dictionary", "dict_type"))
    if not VOICE_ID.match(voice):
        return _detail(400, "voice_not_found", f"A voice with voice_id {voice} does not exist.")
    audio = codecs.encode(await state.synthesize(text, fmt.sample_rate), fmt)
    headers = {"request-id": uuid.uuid4().hex, "character-cost": str(len(text))}
    return await stream_pcm(request, audio, fmt.sample_rate, fault, content_type=fmt.content_type, headers=headers)


def output_format_of(name: str) -> codecs.AudioFormat | None:
    """`mp3_44100_128`, `pcm_16000`, `wav_24000`, `ulaw_8000`, `alaw_8000`, `opus_48000_64` -> the format, else None."""
    codec, _, rest = name.partition("_")
    rate_text = rest.split("_")[0]
    if not rate_text.isdigit():
        return None
    rate = int(rate_text)
    if name in MP3_FORMATS:
        return codecs.AudioFormat("mp3", rate)
    if name in OPUS_FORMATS:
        return codecs.AudioFormat("ogg", rate)
    if codec in ("pcm", "wav") and rate in PCM_RATES and rest == rate_text:
        return codecs.AudioFormat("raw" if codec == "pcm" else "wav", rate)
    if name in ("ulaw_8000", "alaw_8000"):
        return codecs.AudioFormat("raw", 8000, "pcm_mulaw" if codec == "ulaw" else "pcm_alaw")
    return None


async def _stt(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    multipart = request.headers.get("Content-Type", "").startswith("multipart/form-data")
    form = await request.post() if multipart else {}
    fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    state.record(path=request.path, method="POST", query=dict(request.query), headers=dict(request.headers),
                 form=fields)
    fault, refused = admit(state, _check(request, state), _fault_detail)
    if refused is not None:
        return refused
    if not multipart:
        return _invalid((["body", "model_id"], "Field required", "missing"))
    upload = form.get("file")
    problems = []
    if "model_id" not in fields:
        problems.append((["body", "model_id"], "Field required", "missing"))
    if upload is None or isinstance(upload, str):
        problems.append((["body", "file"], "Field required", "missing"))
    if problems:
        return _invalid(*problems)
    if fields["model_id"] not in STT_MODELS:
        return _invalid((["body", "model_id"], f"Input should be {' or '.join(STT_MODELS)}", "literal_error"))
    audio = upload.file.read()  # type: ignore[union-attr]
    if fields.get("file_format") == "pcm_s16le_16":
        pcm, rate = audio, 16000
    else:
        try:
            pcm, rate = codecs.decode(audio)
        except ValueError:
            return _detail(400, "invalid_audio", "The audio file could not be decoded.")
    text = await state.transcribe(pcm, rate) if pcm else ""
    words = []
    for index, word in enumerate(text.split()):
        if index:
            words.append({"text": " ", "start": float(index), "end": float(index), "type": "spacing"})
        words.append({"text": word, "start": float(index), "end": index + 0.5, "type": "word", "logprob": -0.1})
    payload = {"language_code": fields.get("language_code") or "en", "language_probability": 0.98, "text": text,
               "words": words, "transcription_id": uuid.uuid4().hex}
    return await send_body(request, json.dumps(payload).encode(), "application/json", fault)


# --- stream-input WebSocket -------------------------------------------------------------------------

DEFAULT_SCHEDULE = (120, 160, 250, 290)  # characters buffered before each generation (documented default)


async def _stream_input(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    voice = request.match_info["voice_id"]
    messages: list[dict[str, Any]] = []  # what the client sends on this socket, for assertions
    state.record(path=request.path, method="GET", websocket=True, query=dict(request.query),
                 headers=dict(request.headers), messages=messages)
    header_key = request.headers.get("xi-api-key")
    if header_key is not None and header_key != state.api_key:
        return _detail(401, "invalid_api_key", "Invalid API key")  # a refused upgrade (the body is not documented)
    fault, refused = admit(state, None, _fault_detail)
    if refused is not None:
        return refused
    fmt = output_format_of(request.query.get("output_format", "mp3_44100_128"))
    model = request.query.get("model_id", "eleven_multilingual_v2")
    if fmt is None or model not in CHAR_LIMITS or not VOICE_ID.match(voice):
        return _detail(400, "invalid_request", "Unknown output_format, model_id or voice_id.")
    ws = web.WebSocketResponse(heartbeat=None)
    await ws.prepare(request)
    session = _InputStream(state, ws, fmt, fault, abort_transport(request), authorized=header_key is not None)
    session.messages = messages
    try:
        await session.serve()
    except ConnectionResetError:
        pass
    finally:
        session.stop()
    return ws


class _InputStream:
    """Text accumulates; a generation runs when the buffer reaches the schedule's next size, on flush,
    or at the closing empty text, after which `isFinal` is sent and the socket closes."""

    def __init__(self, state: EmulatorState, ws: web.WebSocketResponse, fmt: Any, fault: Fault | None,
                 abort: Any, *, authorized: bool) -> None:
        self.state, self.ws, self.fmt, self.fault, self.abort = state, ws, fmt, fault, abort
        self.authorized = authorized
        self.messages: list[dict[str, Any]] = []
        self.started = False
        self.buffer = ""
        self.schedule = list(DEFAULT_SCHEDULE)
        self.generated = 0
        self.segments: asyncio.Queue[str | None] = asyncio.Queue()
        self.worker = asyncio.create_task(self.speak())

    def stop(self) -> None:
        self.worker.cancel()

    async def refuse(self, error: str, message: str, code: int) -> None:
        await self.ws.send_str(json.dumps({"message": message, "error": error, "code": code}))
        await self.ws.close(code=code, message=message.encode()[:120])

    async def serve(self) -> None:
        from aiohttp import WSMsgType

        async for message in self.ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                event = json.loads(message.data)
                if not isinstance(event, dict) or not isinstance(event.get("text"), str):
                    raise ValueError
            except ValueError:
                await self.refuse("invalid_request", "Each message must be a JSON object with a text field.", 1008)
                return
            self.messages.append(event)
            if not self.started:
                if not self.authorized and event.get("xi-api-key") != self.state.api_key:
                    await self.refuse("invalid_api_key", "Invalid API key", 1008)
                    return
                if event["text"] != " ":
                    await self.refuse("invalid_request", "The first message must have text ' '.", 1008)
                    return
                self.started = True
                schedule = (event.get("generation_config") or {}).get("chunk_length_schedule")
                if isinstance(schedule, list) and schedule:
                    self.schedule = [int(x) for x in schedule]
                continue
            if event["text"] == "":
                self.release()
                self.segments.put_nowait(None)
                await self.worker  # speak what is left, then isFinal; the server closes
                return
            self.buffer += event["text"]
            limit = self.schedule[min(self.generated, len(self.schedule) - 1)]
            if event.get("flush") or len(self.buffer) >= limit:
                self.release()

    def release(self) -> None:
        if self.buffer.strip():
            self.segments.put_nowait(self.buffer)
            self.generated += 1
        self.buffer = ""

    async def speak(self) -> None:
        while (segment := await self.segments.get()) is not None:
            fault, self.fault = self.fault, None
            if fault is not None and fault.kind == "malformed":
                await self.ws.send_str("<html>502 Bad Gateway</html>")
                return
            audio = codecs.encode(await self.state.synthesize(segment, self.fmt.sample_rate), self.fmt)

            async def send(data: bytes) -> None:
                await self.ws.send_str(json.dumps({"audio": base64.b64encode(data).decode(), "isFinal": None,
                                                   "normalizedAlignment": None, "alignment": None}))

            if not await stream_ws_audio(audio, self.fmt.sample_rate, send, fault, self.abort):
                return
        await self.ws.send_str(json.dumps({"isFinal": True}))
        await self.ws.close(code=1000)
