"""A wire-compatible emulator of OpenAI's audio endpoints, so clients are tested over real HTTP.

Serves `POST /v1/audio/transcriptions` and `POST /v1/audio/speech` with OpenAI's auth, validation
and error envelope, and misbehaves on demand (`EmulatorState.faults`): errors, delays, hangs,
stalls, dropped connections, malformed and truncated bodies.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from voicerouter.testing import codecs
from voicerouter.testing.codecs import AudioFormat
from voicerouter.testing.server import EmulatorState, Fault, drop_connection

BASE_PATH = "/v1"  # clients take base_url = emulator URL + this, like https://api.openai.com/v1
TTS_RATE = 24000
CHUNK_BYTES = TTS_RATE * 2 // 50 + 1  # ~20 ms of 24 kHz PCM16; odd, so samples straddle chunks as on a real network
PACE = 0.25  # stream audio at 4x real time, so chunks arrive separately and drops land mid-stream

STT_MODELS = frozenset(
    {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15",
     "gpt-4o-transcribe-diarize", "gpt-transcribe"}
)
TTS_MODELS = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15"})
VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar"}
)
STT_FORMATS = frozenset({"json", "text", "srt", "verbose_json", "vtt", "diarized_json"})
TTS_FORMATS = frozenset({"mp3", "opus", "aac", "flac", "wav", "pcm"})
# Every documented format but AAC, which libsndfile cannot encode. OpenAI serves 24 kHz audio.
ENCODED_TTS_FORMATS = {"mp3": AudioFormat("mp3", TTS_RATE), "opus": AudioFormat("ogg", TTS_RATE),
                       "flac": AudioFormat("flac", TTS_RATE)}
EMULATED_TTS_FORMATS = frozenset({"pcm", "wav", *ENCODED_TTS_FORMATS})

STATE_KEY = web.AppKey("state", EmulatorState)


def error_body(message: str, type_: str = "invalid_request_error", *, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's `ErrorResponse` envelope (all four keys always present)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, type_: str = "invalid_request_error", *, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(message, type_, param=param, code=code), status=status, headers=headers)


def fault_error(fault: Fault) -> web.Response:
    """The response for an `error:STATUS[:RETRY_AFTER]` fault, shaped like OpenAI's."""
    status = fault.status
    headers = None
    if fault.retry_after:  # `error:429:2` -> Retry-After: 2; `error:429:1500ms` -> OpenAI's retry-after-ms: 1500
        after = fault.retry_after.strip()
        headers = {"retry-after-ms": after[:-2]} if after.endswith("ms") else {"Retry-After": after}
    if status == 429:
        return error_response(429, "Rate limit reached for requests", "requests", code="rate_limit_exceeded",
                              headers=headers)
    if status in (401, 403):
        return error_response(status, "Incorrect API key provided", code="invalid_api_key", headers=headers)
    if status >= 500:
        return error_response(status, "The server had an error while processing your request", "server_error",
                              headers=headers)
    return error_response(status, f"emulated error {status}", headers=headers)


def check_auth(request: web.Request, state: EmulatorState) -> web.Response | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header[len("Bearer "):].strip():
        return error_response(
            401, "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", code=None,
        )
    given = header[len("Bearer "):].strip()
    if given != state.api_key:
        # Worse than the vendor (which masks all but the last 4 characters): echo the key whole, so
        # tests prove that clients redact it from every error they raise.
        return error_response(401, f"Incorrect API key provided: {given}.", code="invalid_api_key")
    return None


async def before_answer(fault: Fault | None) -> web.Response | None:
    """Faults that act before any byte is sent: error, slow, hang."""
    if fault is None:
        return None
    if fault.kind == "error":
        return fault_error(fault)
    if fault.kind == "slow":
        await asyncio.sleep(fault.seconds)
    elif fault.kind == "hang":
        await asyncio.sleep(fault.seconds if fault.arg else 3600.0)
    return None


async def fault_then_auth(
    request: web.Request, state: EmulatorState, *, auth: bool = True
) -> tuple[Fault | None, web.StreamResponse | None]:
    """The request's fault first (error, slow, hang act before auth, as on OpenAI), then the key check.

    Returns (fault, answer to send now or None); `auth=False` for endpoints without a key of their own.
    """
    fault = state.take_fault()
    early = await before_answer(fault)
    if early is None and auth:
        early = check_auth(request, state)
    return fault, early


async def send_body(request: web.Request, body: bytes, content_type: str, fault: Fault | None) -> web.StreamResponse:
    """A whole (non-streamed) body, honouring stall, drop and truncate faults."""
    kind = fault.kind if fault else None
    if kind == "malformed":
        body, content_type = b'{"text": "half a json obj', "application/json"
    response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
    response.content_length = len(body)
    await response.prepare(request)
    if kind in ("stall", "drop", "truncate"):
        half = max(1, len(body) // 2)
        await response.write(body[:half])
        if kind == "stall":
            await asyncio.sleep(fault.seconds if fault.arg else 3600.0)  # type: ignore[union-attr]
            await response.write(body[half:])
        else:
            drop_connection(request)  # what a crashed upstream looks like
            return response
    else:
        await response.write(body)
    await response.write_eof()
    return response


async def stream_audio(request: web.Request, pcm: bytes, content_type: str, fault: Fault | None,
                       *, header: bytes = b"") -> web.StreamResponse:
    """Chunked audio in 20 ms pieces paced at 4x real time, honouring stall, drop and truncate faults."""
    kind = fault.kind if fault else None
    response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
    if kind == "truncate":
        response.content_length = len(header) + len(pcm)  # promise it all, send half
    else:
        response.enable_chunked_encoding()
    await response.prepare(request)
    if header:
        await response.write(header)
    started = time.monotonic()
    half = len(pcm) // 2
    stalled = False
    for offset in range(0, len(pcm), CHUNK_BYTES):
        if kind in ("drop", "truncate") and (
            offset >= half or (kind == "drop" and fault.arg and time.monotonic() - started >= fault.seconds)  # type: ignore[union-attr]
        ):
            drop_connection(request)  # what a crashed upstream looks like
            return response
        if kind == "stall" and not stalled and offset >= half:
            stalled = True
            await asyncio.sleep(fault.seconds if fault.arg else 3600.0)  # type: ignore[union-attr]
        chunk = pcm[offset : offset + CHUNK_BYTES]
        await response.write(chunk)
        await asyncio.sleep(len(chunk) / 2 / TTS_RATE * PACE)
    await response.write_eof()
    return response


async def stream_transcript(request: web.Request, text: str, fault: Fault | None) -> web.StreamResponse:
    """`stream=true`: one `transcript.text.delta` SSE event per word, then `transcript.text.done`."""
    kind = fault.kind if fault else None
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    words = text.split(" ")
    for index, word in enumerate(words):
        if index == len(words) // 2 and kind in ("drop", "truncate"):
            drop_connection(request)  # what a crashed upstream looks like
            return response
        if index == len(words) // 2 and kind == "stall":
            await asyncio.sleep(fault.seconds if fault.arg else 3600.0)  # type: ignore[union-attr]
        if index == len(words) // 2 and kind == "malformed":
            await response.write(b'data: {"type":"transcript.text.delta","delta":\n\n')
            continue
        delta = word if index == 0 else " " + word
        await response.write(f"data: {json.dumps({'type': 'transcript.text.delta', 'delta': delta})}\n\n".encode())
        await asyncio.sleep(0.005)
    done = {"type": "transcript.text.done", "text": text, "usage": {"type": "tokens", "input_tokens": 1,
                                                                   "output_tokens": len(words), "total_tokens": 0}}
    await response.write(f"data: {json.dumps(done)}\n\n".encode())
    await response.write_eof()
    return response


async def read_form(request: web.Request) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    """Multipart fields as text, plus the uploaded file (filename, bytes)."""
    fields: dict[str, str] = {}
    upload: tuple[str, bytes] | None = None
    reader = await request.multipart()
    async for part in reader:
        if part.name is None:
            continue
        data = await part.read()  # type: ignore[union-attr]
        if part.filename is not None or part.name == "file":
            if part.name == "file":
                upload = (part.filename or "", bytes(data))
        else:
            fields[part.name] = bytes(data).decode("utf-8", "replace")
    return fields, upload


def decode_audio(data: bytes) -> tuple[bytes, int]:
    """Any soundfile-readable upload -> mono PCM16 bytes and its rate."""
    return codecs.decode(data)


async def transcriptions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fault, early = await fault_then_auth(request, state)
    if early is not None:
        return early
    if not request.content_type.startswith("multipart/form-data"):
        return error_response(400, "Invalid Content-Type header; expected multipart/form-data.")
    try:
        fields, upload = await read_form(request)
    except ValueError as exc:
        return error_response(400, f"Could not parse multipart form: {exc}")
    model = fields.get("model", "")
    state.record(path="/v1/audio/transcriptions", model=model, fields=dict(fields),
                 filename=upload[0] if upload else None)
    if upload is None:
        return error_response(400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
    if not model:
        return error_response(400, "Missing required parameter: 'model'.", param="model",
                              code="missing_required_parameter")
    if state.provider_type == "openai" and model not in STT_MODELS:
        return error_response(404, f"The model `{model}` does not exist or you do not have access to it.",
                              code="model_not_found")
    response_format = fields.get("response_format", "json")
    if response_format not in STT_FORMATS:
        return error_response(400, f"Invalid value: '{response_format}'. Supported values are: "
                              f"{', '.join(sorted(STT_FORMATS))}.", param="response_format", code="invalid_value")
    if response_format not in ("json", "text", "verbose_json"):
        return error_response(400, f"response_format '{response_format}' is not emulated; use json or text.",
                              param="response_format")
    language = fields.get("language")
    if language is not None and (len(language) != 2 or not language.isalpha()):
        return error_response(400, f"Invalid language '{language}'. Language parameter must be specified in "
                              "ISO-639-1 format.", param="language", code="invalid_language_format")
    filename = upload[0]
    if "." not in filename:
        return error_response(400, "Unrecognized file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', "
                              "'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']", param="file")
    try:
        pcm, rate = decode_audio(upload[1])
    except Exception:  # soundfile raises several types for undecodable input
        return error_response(400, "The audio file could not be decoded or its format is not supported.",
                              param="file", code="invalid_value")
    state.requests[-1].update(sample_rate=rate, audio_s=len(pcm) / 2 / rate)
    text = await state.transcribe(pcm, rate)
    if fields.get("stream") == "true" and model != "whisper-1":  # the vendor ignores stream for whisper-1
        if response_format != "json":
            return error_response(400, "Streaming is only supported with response_format json.",
                                  param="response_format")
        return await stream_transcript(request, text, fault)
    if response_format == "text":
        return await send_body(request, (text + "\n").encode(), "text/plain; charset=utf-8", fault)
    body: dict[str, Any] = {"text": text, "usage": {"type": "duration", "seconds": round(len(pcm) / 2 / rate)}}
    if response_format == "verbose_json":
        body.update(task="transcribe", language="english", duration=len(pcm) / 2 / rate, segments=[], words=[])
    return await send_body(request, json.dumps(body).encode(), "application/json", fault)


async def speech(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fault, early = await fault_then_auth(request, state)
    if early is not None:
        return early
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return error_response(400, "We could not parse the JSON body of your request.")
    if not isinstance(payload, dict):
        return error_response(400, "The request body must be a JSON object.")
    state.record(path="/v1/audio/speech", **{k: v for k, v in payload.items() if k != "path"})
    for key in ("model", "input", "voice"):
        if not payload.get(key):
            return error_response(400, f"Missing required parameter: '{key}'.", param=key,
                                  code="missing_required_parameter")
    model, text, voice = payload["model"], payload["input"], payload["voice"]
    if not isinstance(text, str) or len(text) > 4096:
        return error_response(400, "'input' must be a string of at most 4096 characters.", param="input")
    if state.provider_type == "openai":
        if model not in TTS_MODELS:
            return error_response(404, f"The model `{model}` does not exist or you do not have access to it.",
                                  code="model_not_found")
        if isinstance(voice, str) and voice not in VOICES:
            return error_response(400, f"Invalid value: '{voice}'. Supported values are: "
                                  f"{', '.join(sorted(VOICES))}.", param="voice", code="invalid_value")
    response_format = payload.get("response_format", "mp3")
    if response_format not in TTS_FORMATS:
        return error_response(400, f"Invalid value: '{response_format}'. Supported values are: "
                              f"{', '.join(sorted(TTS_FORMATS))}.", param="response_format", code="invalid_value")
    speed = payload.get("speed", 1.0)
    if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
        return error_response(400, "'speed' must be between 0.25 and 4.0.", param="speed")
    if response_format not in EMULATED_TTS_FORMATS:
        return error_response(400, f"response_format '{response_format}' is not emulated; use "
                              f"{', '.join(sorted(EMULATED_TTS_FORMATS))}.",
                              param="response_format")
    if fault is not None and fault.kind == "malformed":
        # A proxy's error page where audio should be.
        return web.Response(status=200, text="<html><body>upstream error</body></html>", content_type="text/html")
    pcm = await state.synthesize(text, TTS_RATE)
    if response_format == "wav":
        return await stream_audio(request, pcm, "audio/wav", fault, header=wav_header(len(pcm), TTS_RATE))
    if response_format in ENCODED_TTS_FORMATS:
        fmt = ENCODED_TTS_FORMATS[response_format]
        return await stream_audio(request, codecs.encode(pcm, fmt), fmt.content_type, fault)
    return await stream_audio(request, pcm, "audio/pcm", fault)


def wav_header(data_bytes: int, rate: int) -> bytes:
    import struct

    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate,
            rate * 2, 2, 16) + b"data" + struct.pack("<I", data_bytes))


async def not_found(request: web.Request) -> web.Response:
    return error_response(404, f"Invalid URL ({request.method} {request.path})", code="unknown_url")


async def models(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    denied = check_auth(request, state)
    if denied is not None:
        return denied
    data = [{"id": m, "object": "model", "owned_by": "openai"} for m in sorted(STT_MODELS | TTS_MODELS)]
    return web.json_response({"object": "list", "data": data})


@web.middleware
async def quiet_disconnects(request: web.Request, handler) -> web.StreamResponse:
    """A client that gives up (deadline, failover) mid-answer is normal here, not a server error to log."""
    try:
        return await handler(request)
    except ConnectionResetError:
        return web.Response(status=499)


def build_app(state: EmulatorState) -> web.Application:
    """The emulator app; the harness serves it on 127.0.0.1 (see `voicerouter.testing.server.emulate`)."""
    # whisper-1's 25 MiB upload limit, plus the form
    app = web.Application(client_max_size=26 * 1024 * 1024, middlewares=[quiet_disconnects])
    app[STATE_KEY] = state
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_get("/v1/models", models)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app

