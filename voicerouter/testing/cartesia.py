"""A Cartesia emulator: POST /tts/bytes in every output_format (raw, wav, mp3), versioned like the vendor.

It needs `Cartesia-Version` and `X-API-Key` (or `Authorization: Bearer`); errors are JSON
`{error_code, title, message, request_id}` for versions from 2026-03-01 and `Title: Message` text before.
"""

from __future__ import annotations

import json
import re
import uuid

from aiohttp import web

from voicerouter.testing import codecs
from voicerouter.testing.server import EmulatorState, stream_pcm

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
    return token if scheme.lower() == "bearer" and token else None


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
