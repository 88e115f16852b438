"""ElevenLabs: streaming TTS as raw PCM (`output_format=pcm_*`) and Scribe batch STT, over HTTP.

Auth is the `xi-api-key` header; errors come as `{"detail": {"status", "message"}}`, or as FastAPI's
422 `{"detail": [{"loc", "msg", "type"}]}` for a request that fails validation.

Table fields: voice (voice id), model (TTS default eleven_flash_v2_5, STT default scribe_v1),
language (sent as its ISO-639 part), sample_rate (pcm_* rates, default 16000); options:
voice_settings, seed, apply_text_normalization, optimize_streaming_latency.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from voicerouter.config.schema import ProviderConfig
from voicerouter.providers import http
from voicerouter.providers._common import (
    batch_only,
    build_vendor,
    pcm_rate,
    probe_synthesis,
    silence,
    wav_bytes,
)
from voicerouter.providers.base import PIPELINE_RATE, AudioChunk, BuildContext, Kind, PartialCallback, Transcript

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_KEY_REF = "${ELEVENLABS_API_KEY}"
OPTIONS = frozenset({"voice_settings", "seed", "apply_text_normalization", "optimize_streaming_latency"})
DEFAULT_TTS_MODEL = "eleven_flash_v2_5"
DEFAULT_STT_MODEL = "scribe_v1"
DEFAULT_VOICE = "JBFqnCBsd6RMkjVDRZzb"  # "George", the voice of the vendor's own quickstart
PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)  # output_format=pcm_<rate>
DEFAULT_RATE = 16000


def create(name: str, kind: Kind, config: ProviderConfig, ctx: BuildContext) -> ElevenLabsTTS | ElevenLabsSTT:
    """Factory named by the registry: an ElevenLabs TTS or STT provider for one routing-table entry."""
    return build_vendor(
        name, kind, config, ctx, vendor="elevenlabs", classes={"tts": ElevenLabsTTS, "stt": ElevenLabsSTT},
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
