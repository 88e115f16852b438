"""ElevenLabs: streaming TTS as raw PCM (`output_format=pcm_*`) and Scribe batch STT, over HTTP.

Auth is the `xi-api-key` header; errors come as `{"detail": {"status", "message"}}`, or as FastAPI's
422 `{"detail": [{"loc", "msg", "type"}]}` for a request that fails validation.

Table fields: voice (voice id), model (TTS default eleven_flash_v2_5, STT default scribe_v1),
language (sent as its ISO-639 part), sample_rate (pcm_* rates, default 16000); options:
voice_settings, seed, apply_text_normalization, optimize_streaming_latency, transport (http or
websocket: TTS over the `stream-input` WebSocket, text sent as it streams in), chunk_length_schedule
(websocket: the generation schedule the server buffers text by), flush (websocket: sentence, the
default, or clause: where streamed text is flushed to speech).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from voicerouter.config.schema import ProviderConfig
from voicerouter.config.secrets import redact
from voicerouter.errors import (
    AuthError,
    ConfigError,
    ProviderError,
    RateLimitedError,
    RequestError,
    TransientProviderError,
)
from voicerouter.providers import http
from voicerouter.providers._common import (
    batch_only,
    build_vendor,
    pcm_rate,
    probe_synthesis,
    silence,
    transport_of,
    wav_bytes,
)
from voicerouter.providers.base import PIPELINE_RATE, AudioChunk, BuildContext, Kind, PartialCallback, Transcript
from voicerouter.providers.closing import reap
from voicerouter.providers.websocket import (
    Generation,
    SocketTTS,
    close_socket,
    dropped,
    flush_rule,
    open_socket,
    send_json,
)

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_KEY_REF = "${ELEVENLABS_API_KEY}"
OPTIONS = frozenset({"voice_settings", "seed", "apply_text_normalization", "optimize_streaming_latency",
                     "transport", "chunk_length_schedule", "flush"})
DEFAULT_TTS_MODEL = "eleven_flash_v2_5"
DEFAULT_STT_MODEL = "scribe_v1"
DEFAULT_VOICE = "JBFqnCBsd6RMkjVDRZzb"  # "George", the voice of the vendor's own quickstart
PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)  # output_format=pcm_<rate>
DEFAULT_RATE = 16000


def create(
    name: str, kind: Kind, config: ProviderConfig, ctx: BuildContext
) -> ElevenLabsTTS | ElevenLabsSocketTTS | ElevenLabsSTT:
    """Factory named by the registry: an ElevenLabs TTS or STT provider for one routing-table entry."""
    tts = ElevenLabsSocketTTS if kind == "tts" and transport_of(name, config) == "websocket" else ElevenLabsTTS
    return build_vendor(
        name, kind, config, ctx, vendor="elevenlabs", classes={"tts": tts, "stt": ElevenLabsSTT},
        options=OPTIONS, key_ref=DEFAULT_KEY_REF, base_url=DEFAULT_BASE_URL,
    )


def error_message(body: bytes) -> str | None:
    """The text of ElevenLabs' `detail` envelope, in either of its shapes."""
    detail = json.loads(body).get("detail")
    if isinstance(detail, dict):
        status, message = detail.get("status"), detail.get("message")
        return f"{status}: {message}" if status and message else (message or status)
    if isinstance(detail, list):  # 422: one entry per invalid field
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return "; ".join(parts) or None
    return str(detail) if detail else None


def language_code(language: str | None) -> str | None:
    """ElevenLabs takes ISO-639 codes (`en`), the table may say `en-US`."""
    return language.split("-")[0].lower() if language else None


class _Base(http.ClientProvider):
    type = "elevenlabs"

    def __init__(self, name: str, config: ProviderConfig, *, key: str, base_url: str, timeout_s: float) -> None:
        super().__init__(name, config, base_url=base_url, timeout_s=timeout_s, headers={"xi-api-key": key})


class ElevenLabsTTS(_Base):
    kind: Kind = "tts"

    def __init__(self, name: str, config: ProviderConfig, **kw: Any) -> None:
        super().__init__(name, config, **kw)
        self.sample_rate = pcm_rate(name, config, DEFAULT_RATE, PCM_RATES, what="elevenlabs has no pcm output")
        self.voice = config.voice or DEFAULT_VOICE
        self.model = config.model or DEFAULT_TTS_MODEL

    def _body(self, text: str) -> dict[str, Any]:
        options = self.config.options
        body: dict[str, Any] = {"text": text, "model_id": self.model}
        if isinstance(options.get("voice_settings"), dict):
            body["voice_settings"] = options["voice_settings"]
        code = language_code(self.config.language)
        if code:
            body["language_code"] = code
        for option in ("seed", "apply_text_normalization"):
            if option in options:
                body[option] = options[option]
        return body

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """POST .../stream with output_format=pcm_<rate>: headerless PCM16 as it is generated."""
        params: dict[str, Any] = {"output_format": f"pcm_{self.sample_rate}"}
        if "optimize_streaming_latency" in self.config.options:
            params["optimize_streaming_latency"] = self.config.options["optimize_streaming_latency"]
        path = f"/v1/text-to-speech/{self.voice}/stream"
        async for chunk in self._post_for_pcm(
            path, self.sample_rate, message_of=error_message, params=params, json=self._body(text)
        ):
            yield chunk

    async def probe(self) -> None:
        """A one-word synthesis, read to its first audio chunk."""
        await probe_synthesis(self, what="text-to-speech")


class ElevenLabsSTT(_Base):
    kind: Kind = "stt"
    supports_streaming = False

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        """POST /v1/speech-to-text (Scribe) with the utterance as a WAV file."""
        data: dict[str, str] = {
            "model_id": self.config.model or DEFAULT_STT_MODEL,
            "tag_audio_events": "false",  # "(laughter)" is not something a voice agent should answer
            "timestamps_granularity": "none",
        }
        code = language_code(self.config.language)
        if code:
            data["language_code"] = code
        files = {"file": ("utterance.wav", wav_bytes(audio.pcm, audio.sample_rate), "audio/wav")}
        try:
            response = await self._client.post("/v1/speech-to-text", data=data, files=files)
        except httpx.HTTPError as exc:
            raise self._error(exc) from None
        await http.raise_for_response(response, provider=self.name, message_of=error_message)
        try:
            text = response.json()["text"]
            if not isinstance(text, str):
                raise TypeError("text is not a string")
        except (ValueError, KeyError, TypeError):
            raise http.malformed("speech-to-text result", response.content, provider=self.name) from None
        return Transcript(text.strip(), True, None, self.name)

    async def open_stream(
        self, sample_rate: int = PIPELINE_RATE, on_partial: PartialCallback | None = None
    ) -> Any:
        raise batch_only("elevenlabs speech-to-text", provider=self.name)

    async def probe(self) -> None:
        """A 200 ms silent transcription: proves the key and the model."""
        await self.transcribe(silence(0.2, PIPELINE_RATE))


# Characters buffered before each generation; the SDK's input streaming sends [50] too (the API's
# default, [120, 160, 250, 290], waits for 120 characters before the first audio).
DEFAULT_SCHEDULE = (50,)
# Text the SDK's chunker cuts at (and ends with a space): a piece is sent when it ends with one of these.
SPLITTERS = (".", ",", "?", "!", ";", ":", "\u2014", "-", "(", ")", "[", "]", "}", " ")


class ElevenLabsSocketTTS(SocketTTS):
    """TTS over `/v1/text-to-speech/{voice}/stream-input`: one socket per generation, text as it comes,
    `flush` at each sentence end so speech starts without waiting for the chunk schedule."""

    type = "elevenlabs"
    kind: Kind = "tts"

    def __init__(self, name: str, config: ProviderConfig, *, key: str, base_url: str, timeout_s: float) -> None:
        self.name = name
        self.config = config
        self.sample_rate = pcm_rate(name, config, DEFAULT_RATE, PCM_RATES, what="elevenlabs has no pcm output")
        self.voice = config.voice or DEFAULT_VOICE
        query = urlencode({"model_id": config.model or DEFAULT_TTS_MODEL, "output_format": f"pcm_{self.sample_rate}"})
        self.url = f"{http.ws_url(base_url)}/v1/text-to-speech/{quote(self.voice, safe='')}/stream-input?{query}"
        self.timeout_s = timeout_s
        self._key = key
        schedule = config.options.get("chunk_length_schedule", DEFAULT_SCHEDULE)
        if not isinstance(schedule, list | tuple) or not schedule or not all(
            isinstance(n, int) and not isinstance(n, bool) and 50 <= n <= 500 for n in schedule
        ):
            raise ConfigError(f"provider {name}: options.chunk_length_schedule must be a list of 50..500 characters",
                              hint="e.g. chunk_length_schedule: [50, 120]")
        self.schedule = list(schedule)
        self.flush_at = flush_rule(name, config.options)

    def _opening(self) -> dict[str, Any]:
        options = self.config.options
        first: dict[str, Any] = {"text": " "}
        if isinstance(options.get("voice_settings"), dict):
            first["voice_settings"] = options["voice_settings"]
        first["generation_config"] = {"chunk_length_schedule": self.schedule}
        return first

    async def _start(self) -> Generation:
        ws = await open_socket(self.url, {"xi-api-key": self._key}, provider=self.name, timeout_s=self.timeout_s,
                               message_of=error_message)
        generation = _StreamInput(self, ws)
        try:
            await send_json(ws, self._opening(), provider=self.name)
        except BaseException:
            close_socket(ws)
            raise
        generation.reader = asyncio.create_task(generation.read())
        return generation

    async def probe(self) -> None:
        """A one-word synthesis over stream-input, read to its first audio."""
        await probe_synthesis(self, what="stream-input")

    async def aclose(self) -> None:
        return None


class _StreamInput(Generation):
    def __init__(self, provider: ElevenLabsSocketTTS, ws: Any) -> None:
        super().__init__()
        self.provider = provider
        self.ws = ws
        self.buffer = ""
        self.final = False
        self.reader: asyncio.Task[None] | None = None

    async def send(self, text: str) -> None:
        self.buffer += text
        if self.buffer.endswith(SPLITTERS):
            piece = self.buffer if self.buffer.endswith(" ") else self.buffer + " "
            self.buffer = ""
            message: dict[str, Any] = {"text": piece}
            if self.provider.flush_at.search(piece):
                message["flush"] = True
            await send_json(self.ws, message, provider=self.provider.name)

    async def end(self) -> None:
        if self.buffer:
            await send_json(self.ws, {"text": self.buffer + " ", "flush": True}, provider=self.provider.name)
            self.buffer = ""
        await send_json(self.ws, {"text": ""}, provider=self.provider.name)

    async def read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        name = self.provider.name
        try:
            async for frame in self.ws:
                try:
                    event = json.loads(frame)
                    if not isinstance(event, dict):
                        raise ValueError
                except ValueError:
                    self.queue.put_nowait(http.malformed("message is not a JSON object", frame, provider=name))
                    return
                if event.get("audio"):
                    try:
                        pcm = base64.b64decode(event["audio"], validate=True)
                    except ValueError:
                        self.queue.put_nowait(http.malformed("audio is not base64", str(event["audio"]),
                                                             provider=name))
                        return
                    self.queue.put_nowait(AudioChunk(pcm[: len(pcm) - len(pcm) % 2], self.provider.sample_rate))
                if event.get("isFinal"):
                    self.final = True
                    self.queue.put_nowait(None)
                    return
                if event.get("message") or event.get("error"):
                    self.queue.put_nowait(_socket_error(event, provider=name))
                    return
            self.queue.put_nowait(TransientProviderError(
                f"stream-input closed before the end of speech (code {self.ws.close_code})", provider=name))
        except ConnectionClosed as exc:
            self.queue.put_nowait(dropped(exc, provider=name))

    async def close(self, *, cancelled: bool) -> None:
        if self.reader is not None:
            await reap(self.reader)
        close_socket(self.ws)  # stream-input has no cancel: closing the socket stops the generation


def _socket_error(event: dict[str, Any], *, provider: str) -> ProviderError:
    """An error message on the stream-input socket (`{message, error, code}`) -> typed error."""
    code = str(event.get("error") or "")
    message = redact(f"{code}: {event.get('message')}" if code and event.get("message") else
                     str(event.get("message") or code or "generation failed"))
    if "api_key" in code or "unauthorized" in code or event.get("code") == 1008:
        return AuthError(message, provider=provider, hint="check the API key and its permissions")
    if "quota" in code or "concurrent" in code or "rate" in code:
        return RateLimitedError(message, provider=provider)
    if code in ("invalid_request", "input_error", "voice_not_found", "model_not_found"):
        return RequestError(message, provider=provider)
    return TransientProviderError(message, provider=provider)
