"""A Deepgram emulator: live /v1/listen WebSocket, batch /v1/listen, /v1/speak over HTTP and WebSocket
(Speak/Flush/Clear/Close), with Deepgram's errors.

Auth is `Authorization: Token KEY`; errors use the `err_code`/`err_msg`/`request_id` envelope, and a
refused WebSocket upgrade carries `dg-error`, as the real service does.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from voicerouter.testing import codecs
from voicerouter.testing.server import (
    EmulatorState,
    Fault,
    abort_transport,
    admit,
    delay_first_byte,
    drop_connection,
    hold_forever,
    send_body,
    stream_pcm,
    stream_ws_audio,
)

TTS_RATES = (8000, 16000, 24000, 32000, 48000)
INTERIM_EVERY_S = 0.5  # seconds of received audio between interim Results
MAX_TTS_CHARS = 2000
STATE = web.AppKey("state", EmulatorState)

_CODES = {
    400: "Bad Request", 401: "INVALID_AUTH", 402: "ASR_PAYMENT_REQUIRED", 403: "INSUFFICIENT_PERMISSIONS",
    413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 429: "TOO_MANY_REQUESTS",
}
_MESSAGES = {401: "Invalid credentials.", 429: "Too many requests. Please try again later"}


def build_app(state: EmulatorState) -> web.Application:
    app = web.Application(client_max_size=64 * 2**20)
    app[STATE] = state
    app.router.add_get("/v1/listen", _listen_live)
    app.router.add_post("/v1/listen", _listen_batch)
    app.router.add_post("/v1/speak", _speak)
    app.router.add_get("/v1/speak", _speak_live)
    return app


def _error(status: int, message: str | None = None, *, code: str | None = None, retry_after: str | None = None,
           dg_header: bool = False) -> web.Response:
    """Deepgram's JSON error envelope (and `dg-error` on refused WebSocket upgrades)."""
    code = code or _CODES.get(status, "INTERNAL_SERVER_ERROR" if status >= 500 else "Bad Request")
    message = message or _MESSAGES.get(status, "The request failed.")
    request_id = str(uuid.uuid4())
    headers = {"dg-request-id": request_id}
    if dg_header:
        headers["dg-error"] = message
    if retry_after:
        headers["Retry-After"] = retry_after
    body = {"err_code": code, "err_msg": message, "request_id": request_id}
    return web.json_response(body, status=status, headers=headers)


def _auth_error(request: web.Request, state: EmulatorState, *, upgrade: bool = False) -> web.Response | None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme in ("Token", "Bearer") and key == state.api_key:
        return None
    return _error(401, "Invalid credentials.", dg_header=upgrade)


def _fault_error(fault: Fault | None, *, upgrade: bool = False) -> web.Response | None:
    if fault is not None and fault.kind == "error" and fault.status < 1000:
        return _error(fault.status, retry_after=fault.retry_after, dg_header=upgrade)
    return None


def _bool(value: str | None, default: bool = False) -> bool:
    return default if value is None else value.lower() == "true"


async def _listen_batch(request: web.Request) -> web.StreamResponse:
    state: EmulatorState = request.app[STATE]
    body = await request.read()
    state.record(path="/v1/listen", method="POST", query=dict(request.query), headers=dict(request.headers),
                 bytes=len(body))
    fault, refused = admit(state, _auth_error(request, state), _fault_error)
    if refused is not None:
        return refused
    content_type = request.headers.get("Content-Type", "")
    if content_type.startswith("application/json"):
        return _error(400, "Remote URLs are not supported by this emulator.")
    if not (content_type.startswith("audio/") or content_type == "application/octet-stream"):
        return _error(415, f"Unsupported media type {content_type!r}.", code="UNSUPPORTED_MEDIA_TYPE")
    try:
        pcm, rate = _decode_upload(body, request.query)
    except ValueError:
        return _error(400, "Bad Request: failed to process audio: corrupt or unsupported data")
    text = await state.transcribe(pcm, rate) if pcm else ""
    duration = len(pcm) / 2 / rate
    payload = {
        "metadata": {"transaction_key": "deprecated", "request_id": str(uuid.uuid4()), "duration": duration,
                     "channels": 1, "models": [str(uuid.UUID(int=0))]},
        "results": {"channels": [{"alternatives": [_alternative(text, 0.0, duration)]}]},
    }
    return await send_body(request, json.dumps(payload).encode(), "application/json", fault)


# Deepgram `encoding` values for headerless audio that libsndfile decodes (flac/opus are containerized).
RAW_ENCODINGS = {"linear16": "pcm_s16le", "linear32": "pcm_s32le", "mulaw": "pcm_mulaw", "alaw": "pcm_alaw"}


def _decode_upload(body: bytes, query: Any) -> tuple[bytes, int]:
    """Containerized audio is sniffed; with `encoding` (+ `sample_rate`, `channels`) it is raw, as Deepgram reads it."""
    encoding = query.get("encoding")
    if encoding is None or encoding in ("flac", "opus", "ogg-opus"):
        return codecs.decode(body)
    if encoding not in RAW_ENCODINGS:
        raise ValueError(f"encoding {encoding} is not decodable here")
    try:
        rate, channels = int(query.get("sample_rate", "")), int(query.get("channels", "1"))
    except ValueError:
        raise ValueError("sample_rate is required with encoding") from None
    return codecs.decode_raw(body, RAW_ENCODINGS[encoding], rate, channels), rate


def _alternative(text: str, start: float, duration: float) -> dict[str, Any]:
    words = text.split()
    step = duration / max(1, len(words))
    return {
        "transcript": text,
        "confidence": 0.98 if text else 0.0,
        "words": [
            {"word": w.strip(".,?!").lower(), "start": round(start + i * step, 3),
             "end": round(start + (i + 1) * step, 3), "confidence": 0.98, "punctuated_word": w}
            for i, w in enumerate(words)
        ],
    }


async def _speak(request: web.Request) -> web.StreamResponse:
    state: EmulatorState = request.app[STATE]
    raw = await request.read()
    state.record(path="/v1/speak", method="POST", query=dict(request.query), headers=dict(request.headers),
                 body=raw.decode("utf-8", "replace"))
    fault, refused = admit(state, _auth_error(request, state), _fault_error)
    if refused is not None:
        return refused
    query = request.query
    content_type = request.headers.get("Content-Type", "")
    if content_type.startswith("application/json"):
        try:
            text = json.loads(raw).get("text")
        except (ValueError, AttributeError):
            return _error(400, "Invalid JSON submitted.", code="INVALID_JSON")
    elif content_type.startswith("text/plain"):
        text = raw.decode("utf-8", "replace")
    else:
        return _error(415, "Content-Type must be application/json or text/plain.")
    if not isinstance(text, str) or not text.strip():
        return _error(400, "Text must not be empty.", code="INVALID_QUERY_PARAMETER")
    if len(text) > MAX_TTS_CHARS:
        return _error(413, f"Text exceeds the {MAX_TTS_CHARS} character limit.", code="PAYLOAD_TOO_LARGE")
    model = query.get("model", "aura-asteria-en")
    if not model.startswith("aura-"):
        return _error(400, "No such model/version combination found.")
    fmt = _speak_format(query)
    if fmt is None:
        return _error(400, f"Unsupported audio format: encoding={query.get('encoding')} "
                           f"container={query.get('container')} sample_rate={query.get('sample_rate')}.",
                      code="INVALID_QUERY_PARAMETER")
    audio = codecs.encode(await state.synthesize(text, fmt.sample_rate), fmt)
    headers = {"dg-request-id": str(uuid.uuid4()), "dg-model-name": model, "dg-char-count": str(len(text))}
    content = fmt.content_type
    if fmt.container == "raw":
        kind = {"pcm_s16le": "l16", "pcm_mulaw": "mulaw", "pcm_alaw": "alaw"}[fmt.encoding]
        content = f"audio/{kind};rate={fmt.sample_rate}"
    return await stream_pcm(request, audio, fmt.sample_rate, fault, content_type=content, headers=headers)


# /v1/speak: encoding -> (containers, rates, default rate); the first container is the default.
SPEAK_FORMATS: dict[str, tuple[tuple[str, ...], tuple[int, ...], int]] = {
    "linear16": (("wav", "none"), TTS_RATES, 24000),
    "mulaw": (("wav", "none"), (8000, 16000), 8000),
    "alaw": (("wav", "none"), (8000, 16000), 8000),
    "mp3": (("none",), (22050,), 22050),
    "opus": (("ogg",), (48000,), 48000),
    "flac": (("none",), (8000, 16000, 22050, 32000, 48000), 48000),
}


def _speak_format(query: Any) -> codecs.AudioFormat | None:
    """The documented encoding/container/sample_rate combination asked for, or None (AAC is not produced)."""
    encoding = query.get("encoding", "linear16")
    if encoding not in SPEAK_FORMATS:
        return None
    containers, rates, default_rate = SPEAK_FORMATS[encoding]
    container = query.get("container", containers[0])
    try:
        rate = int(query.get("sample_rate", default_rate))
    except ValueError:
        return None
    if container not in containers or rate not in rates:
        return None
    if encoding in ("mp3", "opus", "flac"):
        return codecs.AudioFormat({"mp3": "mp3", "opus": "ogg", "flac": "flac"}[encoding], rate)
    pcm = {"linear16": "pcm_s16le", "mulaw": "pcm_mulaw", "alaw": "pcm_alaw"}[encoding]
    return codecs.AudioFormat("wav" if container == "wav" else "raw", rate, pcm)


async def _listen_live(request: web.Request) -> web.StreamResponse:
    state: EmulatorState = request.app[STATE]
    state.record(path="/v1/listen", method="GET", query=dict(request.query), headers=dict(request.headers))
    fault, refused = admit(
        state, _auth_error(request, state, upgrade=True), lambda fault: _fault_error(fault, upgrade=True)
    )
    if refused is not None:
        return refused
    query = request.query
    encoding = query.get("encoding")
    if encoding not in (None, "linear16"):
        return _error(400, f"The emulator accepts encoding=linear16 only, not {encoding}.", dg_header=True)
    try:
        rate = int(query.get("sample_rate", "16000"))
        channels = int(query.get("channels", "1"))
    except ValueError:
        return _error(400, "sample_rate and channels must be integers.", dg_header=True)
    if encoding is None or channels != 1:
        return _error(400, "The emulator needs raw mono audio: encoding=linear16, channels=1.", dg_header=True)
    await delay_first_byte(fault)
    ws = web.WebSocketResponse(autoping=True, max_msg_size=2**22)
    ws.headers["dg-request-id"] = str(uuid.uuid4())
    await ws.prepare(request)
    session = _LiveSession(state, ws, request, rate, fault, interim=_bool(query.get("interim_results")))
    try:
        await session.run()
    except ConnectionResetError:
        pass  # the client went away mid-stream
    return ws


class _LiveSession:
    """One live socket: audio in, interim and final Results out, Metadata and close on CloseStream."""

    def __init__(self, state: EmulatorState, ws: web.WebSocketResponse, request: web.Request, rate: int,
                 fault: Fault | None, *, interim: bool) -> None:
        self.state, self.ws, self.request, self.rate, self.fault = state, ws, request, rate, fault
        self.interim = interim
        self.segment = bytearray()  # audio since the last final
        self.segment_start = 0.0
        self.total_bytes = 0
        self.next_interim = INTERIM_EVERY_S
        self.faulted = False
        self.fixed_given = False  # a fixed transcript belongs to the first final only
        self.engine: Any = None  # a streaming PocketSphinx decoder when no fixed transcript is set
        self.engine_partial = ""

    @property
    def received_s(self) -> float:
        return self.total_bytes / 2 / self.rate

    async def run(self) -> None:
        kind = self.fault.kind if self.fault else None
        try:
            await self._serve(kind)
        finally:
            if self.engine is not None:
                await self.engine.aclose()

    async def _serve(self, kind: str | None) -> None:
        async for message in self.ws:
            if message.type == WSMsgType.BINARY:
                if not message.data:
                    await self.ws.close(code=1008, message=b"DATA-0000")
                    return
                self.segment.extend(message.data)
                self.total_bytes += len(message.data)
                await self._feed_engine(message.data)
                if await self._audio_fault(kind):
                    return
                if self.interim and self.received_s >= self.next_interim:
                    self.next_interim += INTERIM_EVERY_S
                    await self._send_results(final=False)
            elif message.type == WSMsgType.TEXT:
                try:
                    control = json.loads(message.data)
                    control_type = control["type"]
                except (ValueError, KeyError, TypeError):
                    await self.ws.close(code=1008, message=b"DATA-0000")
                    return
                self.state.record(path="/v1/listen", control=control_type)
                if control_type == "Finalize":
                    if await self._final_fault(kind):
                        return
                    if self.segment:  # nothing buffered, nothing to finalize
                        await self._send_results(final=True, from_finalize=True)
                elif control_type == "CloseStream":
                    if await self._final_fault(kind):
                        return
                    if self.segment:
                        await self._send_results(final=True)
                    await self.ws.send_json({
                        "type": "Metadata", "transaction_key": "deprecated", "request_id": str(uuid.uuid4()),
                        "created": "1970-01-01T00:00:00.000Z", "duration": round(self.received_s, 3),
                        "channels": 1,
                    })
                    await self.ws.close(code=1000)
                    return
                elif control_type != "KeepAlive":
                    await self.ws.close(code=1008, message=b"DATA-0000")
                    return
            else:
                return

    async def _audio_fault(self, kind: str | None) -> bool:
        """Faults that strike while audio arrives; True when the session is over."""
        if self.faulted or kind is None:
            return False
        fault = self.fault
        assert fault is not None
        if kind == "drop" and fault.seconds > 0 and self.received_s >= fault.seconds:
            drop_connection(self.request)
            return True
        if kind == "error" and fault.status >= 1000 and self.received_s >= 0.2:
            await self.ws.close(code=fault.status, message=b"NET-0000")
            return True
        if kind == "stall" and self.received_s >= 0.2:
            self.faulted = True
            await asyncio.sleep(fault.seconds)
        return False

    async def _final_fault(self, kind: str | None) -> bool:
        """Faults that strike where the first final would go; True when the session is over."""
        if self.faulted or kind is None:
            return False
        self.faulted = True
        if kind == "drop":
            drop_connection(self.request)
            return True
        if kind == "hang":
            await hold_forever()
        if kind in ("malformed", "truncate"):
            text = await self._results_json(final=True)
            await self.ws.send_str("upstream error" if kind == "malformed" else text[: len(text) // 2])
        if kind == "error" and self.fault is not None and self.fault.status >= 1000:
            await self.ws.close(code=self.fault.status, message=b"NET-0000")
            return True
        return False

    async def _feed_engine(self, pcm: bytes) -> None:
        """Real recognition streams like the vendor: partials come from a decoder fed as audio arrives."""
        if self.state.transcript is not None:
            return
        if self.engine is None:
            from voicerouter.providers.local.pocketsphinx import PocketSphinxStream

            self.engine_partial = ""
            self.engine = PocketSphinxStream("emulator", self.rate, self._on_engine_partial)
        await self.engine.send(pcm)

    def _on_engine_partial(self, partial: Any) -> None:
        self.engine_partial = partial.text

    async def _engine_text(self, pcm: bytes, *, final: bool) -> str:
        if not final:
            return self.engine_partial
        if self.engine is not None:  # the live decoder served the partials; the final decodes the whole span
            engine, self.engine = self.engine, None
            await engine.aclose()
        return await self.state.transcribe(pcm, self.rate) if pcm else ""

    async def _results_json(self, *, final: bool, from_finalize: bool = False) -> str:
        pcm = bytes(self.segment)
        duration = len(pcm) / 2 / self.rate
        if self.state.transcript is None:
            text = await self._engine_text(pcm, final=final)
        elif not final:
            words = self.state.transcript.split()
            progress = min(1.0, self.received_s / max(INTERIM_EVERY_S * 2, 1e-3))
            text = " ".join(words[: max(1, math.ceil(len(words) * progress))])
        else:
            text = self.state.transcript
        if final:
            self.segment.clear()
            start, self.segment_start = self.segment_start, self.segment_start + duration
            if self.state.transcript is not None:
                text, self.fixed_given = ("" if self.fixed_given else text), True
        else:
            start = self.segment_start
        return json.dumps({
            "type": "Results", "channel_index": [0, 1], "duration": round(duration, 3), "start": round(start, 3),
            "is_final": final, "speech_final": final, "from_finalize": from_finalize,
            "channel": {"alternatives": [_alternative(text, start, duration)]},
            "metadata": {"request_id": str(uuid.uuid4()), "model_info": {"name": "emulator", "version": "0",
                                                                           "arch": "emulator"}},
        })

    async def _send_results(self, *, final: bool, from_finalize: bool = False) -> None:
        await self.ws.send_str(await self._results_json(final=final, from_finalize=from_finalize))


# --- the speak WebSocket --------------------------------------------------------------------------

SPEAK_SOCKET_ENCODINGS = {"linear16": "pcm_s16le", "mulaw": "pcm_mulaw", "alaw": "pcm_alaw"}


async def _speak_live(request: web.Request) -> web.StreamResponse:
    state: EmulatorState = request.app[STATE]
    messages: list[dict[str, Any]] = []  # what the client sends on this socket, for assertions
    state.record(path="/v1/speak", method="GET", websocket=True, query=dict(request.query),
                 headers=dict(request.headers), messages=messages)
    fault, refused = admit(
        state, _auth_error(request, state, upgrade=True), lambda fault: _fault_error(fault, upgrade=True)
    )
    if refused is not None:
        return refused
    query = request.query
    encoding = query.get("encoding", "linear16")
    try:
        rate = int(query.get("sample_rate", "24000" if encoding == "linear16" else "8000"))
    except ValueError:
        return _error(400, "sample_rate must be an integer.", code="INVALID_QUERY_PARAMETER", dg_header=True)
    if encoding not in SPEAK_SOCKET_ENCODINGS or rate not in TTS_RATES:
        return _error(400, f"Unsupported audio format: encoding={encoding} sample_rate={rate}.",
                      code="INVALID_QUERY_PARAMETER", dg_header=True)
    model = query.get("model", "aura-asteria-en")
    if not model.startswith("aura-"):
        return _error(400, "No such model/version combination found.", dg_header=True)
    await delay_first_byte(fault)
    ws = web.WebSocketResponse(autoping=True)
    request_id = str(uuid.uuid4())
    ws.headers["dg-request-id"] = request_id
    await ws.prepare(request)
    await ws.send_str(json.dumps({"type": "Metadata", "request_id": request_id, "model_name": model,
                                  "model_version": "2025-01-01.0", "model_uuid": str(uuid.UUID(int=1))}))
    socket = _SpeakSocket(state, ws, codecs.AudioFormat("raw", rate, SPEAK_SOCKET_ENCODINGS[encoding]), fault,
                          abort_transport(request), messages)
    try:
        await socket.serve()
    except ConnectionResetError:
        pass
    finally:
        if socket.worker is not None:
            socket.worker.cancel()
    return ws


class _SpeakSocket:
    """Text is buffered until Flush, then spoken as binary frames and answered with Flushed."""

    def __init__(self, state: EmulatorState, ws: web.WebSocketResponse, fmt: codecs.AudioFormat,
                 fault: Fault | None, abort: Any, messages: list[dict[str, Any]]) -> None:
        self.state, self.ws, self.fmt, self.fault, self.abort = state, ws, fmt, fault, abort
        self.messages = messages
        self.buffer = ""
        self.sequence = 0
        self.flushes: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self.worker: asyncio.Task | None = None

    async def send(self, event: dict[str, Any]) -> None:
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(event))

    async def serve(self) -> None:
        self.worker = asyncio.create_task(self.speak())
        async for message in self.ws:
            if message.type != WSMsgType.TEXT:
                await self.send({"type": "Warning", "description": "Binary messages are not accepted.",
                                 "code": "INVALID_MESSAGE"})
                continue
            try:
                event = json.loads(message.data)
                kind = event.get("type")
            except (ValueError, AttributeError):
                await self.send({"type": "Warning", "description": "Message is not JSON.", "code": "INVALID_JSON"})
                continue
            self.messages.append(event)
            if kind == "Speak" and isinstance(event.get("text"), str):
                self.buffer += event["text"]
                if len(self.buffer) > MAX_TTS_CHARS:
                    await self.send({"type": "Warning", "description": "Text exceeds the character limit.",
                                     "code": "TEXT_LIMIT_EXCEEDED"})
            elif kind == "Flush":
                self.sequence += 1
                self.flushes.put_nowait((self.sequence, self.buffer))
                self.buffer = ""
            elif kind == "Clear":
                self.buffer = ""
                if self.worker is not None:
                    self.worker.cancel()
                while not self.flushes.empty():
                    self.flushes.get_nowait()
                await self.send({"type": "Cleared", "sequence_id": self.sequence})
                self.worker = asyncio.create_task(self.speak())
            elif kind == "Close":
                await self.ws.close(code=1000)
                return
            else:
                await self.send({"type": "Warning", "description": f"Unknown message type {kind!r}.",
                                 "code": "UNKNOWN_MESSAGE_TYPE"})

    async def speak(self) -> None:
        while True:
            sequence, text = await self.flushes.get()
            fault, self.fault = self.fault, None  # a fault hits the socket's first flush
            if fault is not None and fault.kind == "malformed":
                await self.ws.send_str("<html>502 Bad Gateway</html>")
                return
            if text.strip():
                pcm = codecs.encode(await self.state.synthesize(text, self.fmt.sample_rate), self.fmt)
                if not await stream_ws_audio(pcm, self.fmt.sample_rate, self.ws.send_bytes, fault, self.abort):
                    return
            await self.send({"type": "Flushed", "sequence_id": sequence})
