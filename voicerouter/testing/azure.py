"""An Azure Speech emulator: short-audio recognition and SSML synthesis, REST, like the regional hosts.

Auth is `Ocp-Apim-Subscription-Key` (or `Authorization: Bearer`): 401 for a wrong key, 403 for none.
Errors are status-only, as Azure documents them. `error:200` answers 200 with RecognitionStatus
Error, Azure's in-band recognition failure.
"""

from __future__ import annotations

import json
import re
import uuid
import xml.etree.ElementTree as ET

from aiohttp import web

from voicerouter.testing import codecs
from voicerouter.testing.server import EmulatorState, Fault, admit, read_wav, send_body, stream_pcm

STATE = web.AppKey("state", EmulatorState)
STT_PATH = "/speech/recognition/conversation/cognitiveservices/v1"
TTS_PATH = "/cognitiveservices/v1"
LANGUAGE = re.compile(r"^[a-z]{2,3}-[A-Z]{2}$")
RAW_FORMATS = {"raw-8khz-16bit-mono-pcm": 8000, "raw-16khz-16bit-mono-pcm": 16000,
               "raw-22050hz-16bit-mono-pcm": 22050, "raw-24khz-16bit-mono-pcm": 24000,
               "raw-44100hz-16bit-mono-pcm": 44100, "raw-48khz-16bit-mono-pcm": 48000}
RIFF_FORMATS = {"riff-8khz-16bit-mono-pcm": 8000, "riff-22050hz-16bit-mono-pcm": 22050,
                "riff-24khz-16bit-mono-pcm": 24000, "riff-44100hz-16bit-mono-pcm": 44100,
                "riff-48khz-16bit-mono-pcm": 48000}
MAX_STT_SECONDS = 60
TICKS_PER_SECOND = 10_000_000
SSML_NS = "{http://www.w3.org/2001/10/synthesis}"


def build_app(state: EmulatorState) -> web.Application:
    app = web.Application(client_max_size=16 * 2**20)
    app[STATE] = state
    app.router.add_post(STT_PATH, _recognize)
    app.router.add_post(TTS_PATH, _synthesize)
    return app


def _status(status: int, retry_after: str | None = None) -> web.Response:
    headers = {"apim-request-id": str(uuid.uuid4())}
    if retry_after:
        headers["Retry-After"] = retry_after
    return web.Response(status=status, headers=headers)


def _auth(request: web.Request, state: EmulatorState) -> web.Response | None:
    key = request.headers.get("Ocp-Apim-Subscription-Key")
    if key is None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        key = token if scheme == "Bearer" and token else None
    if key is None:
        return _status(403)
    return None if key == state.api_key else _status(401)


def _error_fault(fault: Fault | None) -> web.Response | None:
    if fault is not None and fault.kind == "error" and fault.status != 200:
        return _status(fault.status, fault.retry_after)
    return None


async def _recognize(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await request.read()
    state.record(path=request.path, method="POST", query=dict(request.query), headers=dict(request.headers),
                 bytes=len(body))
    fault, refused = admit(state, _auth(request, state), _error_fault)
    if refused is not None:
        return refused
    language = request.query.get("language")
    response_format = request.query.get("format", "simple")
    if not language or not LANGUAGE.match(language) or response_format not in ("simple", "detailed"):
        return _status(400)
    content_type = request.headers.get("Content-Type", "")
    media, *params = [p.strip() for p in content_type.split(";")]
    if media not in ("audio/wav", "audio/ogg"):
        return _status(415)
    declared = dict(p.split("=", 1) for p in params if "=" in p)
    if declared.get("samplerate", "16000") != "16000":
        return _status(400)  # the service takes 16 kHz mono WAV/PCM or OGG/Opus
    if media == "audio/ogg" and declared.get("codecs", "opus") != "opus":
        return _status(415)
    try:
        if media == "audio/wav":
            _, rate, channels, width = read_wav(body)
            if channels != 1 or width != 2:
                return _status(400)
        pcm, rate = codecs.decode(body)
    except ValueError:
        return _status(400)
    if rate != 16000 or len(pcm) / 2 / rate > MAX_STT_SECONDS:
        return _status(400)
    duration = int(len(pcm) / 2 / rate * TICKS_PER_SECOND)
    if fault is not None and fault.kind == "error":  # error:200, in-band failure
        payload: dict = {"RecognitionStatus": "Error", "Offset": 0, "Duration": 0}
    else:
        text = await state.transcribe(pcm, rate) if pcm else ""
        if not pcm:
            payload = {"RecognitionStatus": "InitialSilenceTimeout", "Offset": 0, "Duration": 0}
        elif not text.strip():
            payload = {"RecognitionStatus": "NoMatch", "Offset": 0, "Duration": duration}
        else:
            payload = {"RecognitionStatus": "Success", "Offset": 500000, "Duration": duration, "DisplayText": text}
            if response_format == "detailed":
                payload["NBest"] = [{"Confidence": 0.93, "Lexical": text.lower(), "ITN": text.lower(),
                                     "MaskedITN": text.lower(), "Display": text}]
    return await send_body(request, json.dumps(payload).encode(), "application/json", fault)


async def _synthesize(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    raw = await request.read()
    info = {"path": request.path, "method": "POST", "headers": dict(request.headers),
            "body": raw.decode("utf-8", "replace")}
    state.record(**info)
    fault, refused = admit(state, _auth(request, state), _error_fault)
    if refused is not None:
        return refused
    if not request.headers.get("Content-Type", "").startswith("application/ssml+xml"):
        return _status(415)
    user_agent = request.headers.get("User-Agent", "")
    output_format = request.headers.get("X-Microsoft-OutputFormat", "")
    if not user_agent or len(user_agent) >= 255 or not output_format:
        return _status(400)
    fmt = output_format_of(output_format)
    if fmt is None:
        return _status(400)  # unknown, or one libsndfile cannot produce (webm, amr, siren, truesilk)
    rate = fmt.sample_rate
    try:
        root = ET.fromstring(raw)
    except ET.ParseError:
        return _status(400)
    voice = root.find(f"{SSML_NS}voice")
    if voice is None:
        voice = root.find("voice")
    if root.tag not in (f"{SSML_NS}speak", "speak") or voice is None or not voice.get("name"):
        return _status(400)
    text = "".join(root.itertext())
    state.requests[-1]["text"] = text
    if not text.strip():
        return _status(400)
    audio = codecs.encode(await state.synthesize(text, rate), fmt)
    content_type = {"wav": "audio/x-wav", "raw": "application/octet-stream"}.get(fmt.container, fmt.content_type)
    return await stream_pcm(request, audio, rate, fault, content_type=content_type,
                            headers={"X-RequestId": uuid.uuid4().hex})


_FORMAT = re.compile(r"^(raw|riff|audio|ogg)-(\d+)khz-(?:(\d+)kbitrate|(8|16)bit)-mono-(pcm|mulaw|alaw|mp3|opus)$")


def output_format_of(name: str) -> codecs.AudioFormat | None:
    """An `X-Microsoft-OutputFormat` name (`raw-24khz-16bit-mono-pcm`, `riff-8khz-8bit-mono-mulaw`,
    `audio-24khz-48kbitrate-mono-mp3`, `ogg-48khz-16bit-mono-opus`, ...) -> the format, else None."""
    rate = RAW_FORMATS.get(name) or RIFF_FORMATS.get(name)
    if rate is not None:
        return codecs.AudioFormat("raw" if name.startswith("raw-") else "wav", rate)
    match = _FORMAT.match(name.replace("22050hz", "22khz").replace("44100hz", "44khz"))
    if match is None:
        return None
    family, khz, _kbps, bits, codec = match.groups()
    rate = {"8": 8000, "16": 16000, "22": 22050, "24": 24000, "44": 44100, "48": 48000}.get(khz)
    if rate is None:
        return None
    if codec in ("mulaw", "alaw") and family in ("raw", "riff") and bits == "8":
        return codecs.AudioFormat("raw" if family == "raw" else "wav", rate, f"pcm_{codec}")
    if codec == "mp3" and family == "audio":
        return codecs.AudioFormat("mp3", rate)
    if codec == "opus" and family == "ogg":
        return codecs.AudioFormat("ogg", rate)
    return None
