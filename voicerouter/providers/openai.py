"""OpenAI's audio API (and servers that copy it): batch STT via /audio/transcriptions, streamed TTS via /audio/speech.

One pooled httpx client per provider instance; every failure becomes a typed error that names the
instance, so the resilience layer can retry, fail over or give up.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from voicerouter.config.schema import ProviderConfig
from voicerouter.config.secrets import expand, remember_secret
from voicerouter.errors import ConfigError, ProviderError, ProviderTimeout
from voicerouter.providers import _common, http
from voicerouter.providers.base import (
    PIPELINE_RATE,
    AudioChunk,
    BuildContext,
    Kind,
    PartialCallback,
    STTStream,
    Transcript,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_ENV_VAR = "OPENAI_API_KEY"
PCM_RATE = 24000  # OpenAI's `pcm` speech format: 24 kHz mono PCM16, no header
DEFAULT_TIMEOUT_S = 30.0
DEFAULTS = {
    "openai": {"stt": "gpt-4o-mini-transcribe", "tts": "gpt-4o-mini-tts", "voice": "alloy"},
    "openai-compatible": {"stt": "whisper-1", "tts": "tts-1", "voice": "alloy"},
}


def error_message(body: bytes) -> str | None:
    """The message of OpenAI's `{"error": {"message"}}` envelope (or FastAPI's `{"detail"}` on look-alikes)."""
    data = json.loads(body)
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            code = err.get("code") or err.get("type")
            return f"{err['message']} ({code})" if code else str(err["message"])
        if isinstance(err, str):
            return err
        detail = data.get("detail")
        if detail:
            return detail if isinstance(detail, str) else json.dumps(detail)[:200]
    return None


def wav_bytes(audio: AudioChunk) -> bytes:
    return _common.wav_bytes(audio.pcm, audio.sample_rate)


def resolve_key(name: str, config: ProviderConfig, ctx: BuildContext, *, required: bool) -> str | None:
    """The API key from its `${VAR}` reference; a missing variable fails the session start, before audio."""
    reference = config.api_key
    if reference is None:
        if not required:
            return None
        reference = "${" + DEFAULT_ENV_VAR + "}"
    try:
        key = expand(reference, ctx.env, what=f"provider {name}", secret=True)
    except ProviderError as exc:
        raise exc.with_context(provider=name) from None
    remember_secret(key)  # literal keys are redacted too
    return key


class OpenAIAudio:
    """What the STT and TTS halves share: config, the pooled client, and error mapping."""

    def __init__(self, name: str, type_name: str, kind: Kind, config: ProviderConfig, *, base_url: str,
                 api_key: str | None) -> None:
        self.name = name
        self.type = type_name
        self.kind = kind
        self.config = config
        self.base_url = http.check_base_url(base_url, provider=name)
        self.model = config.model or DEFAULTS[type_name][kind]
        self.timeout_s = config.timeout_ms / 1000 if config.timeout_ms else DEFAULT_TIMEOUT_S
        headers = {"User-Agent": "voicerouter"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        for option, header in (("organization", "OpenAI-Organization"), ("project", "OpenAI-Project")):
            if config.options.get(option):
                headers[header] = str(config.options[option])
        self.client = http.make_client(self.base_url, headers=headers, timeout_s=self.timeout_s,
                                       connect_timeout_s=min(5.0, self.timeout_s))

    def _fail(self, exc: Exception) -> ProviderError:
        return http.transport_error(exc, provider=self.name).with_context(provider=self.name)

    async def aclose(self) -> None:
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.type}/{self.kind} {self.model} {self.base_url}>"


class OpenAISTT(OpenAIAudio):
    """Batch transcription of one utterance per request."""

    supports_streaming = False

    @property
    def streams_text(self) -> bool:
        """`options.stream: true` asks for SSE transcript deltas (the vendor ignores it for whisper-1)."""
        return bool(self.config.options.get("stream", False)) and self.model != "whisper-1"

    async def transcribe(self, audio: AudioChunk, on_partial: PartialCallback | None = None) -> Transcript:
        data: dict[str, str] = {"model": self.model, "response_format": "json"}
        language = self.config.language
        if language:
            data["language"] = language.split("-")[0].lower()  # the API takes ISO-639-1 ("en", not "en-US")
        for option in ("prompt", "temperature"):
            if self.config.options.get(option) is not None:
                data[option] = str(self.config.options[option])
        if self.streams_text:
            data["stream"] = "true"
        files = {"file": ("utterance.wav", wav_bytes(audio), "audio/wav")}
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.client.stream("POST", "/audio/transcriptions", data=data, files=files) as response:
                    await http.raise_for_response(response, provider=self.name, message_of=error_message)
                    if response.headers.get("content-type", "").startswith("text/event-stream"):
                        text = await self._read_events(response, on_partial)
                    else:
                        text = self._parse(await response.aread())
        except TimeoutError:
            raise ProviderTimeout(f"no transcript within {self.timeout_s:g} s", provider=self.name) from None
        except (httpx.HTTPError, OSError, ProviderError) as exc:
            raise self._fail(exc) from None
        return Transcript(text, is_final=True, provider=self.name)

    async def _read_events(self, response: httpx.Response, on_partial: PartialCallback | None) -> str:
        """SSE `transcript.text.delta` events (partials) up to `transcript.text.done` (the final text)."""
        partial = ""
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[len("data:"):].strip()
            if payload == "[DONE]":
                continue
            try:
                event = json.loads(payload)
            except json.JSONDecodeError:
                raise http.malformed("transcription event is not JSON", payload, provider=self.name) from None
            kind = event.get("type") if isinstance(event, dict) else None
            if kind == "transcript.text.delta":
                partial += str(event.get("delta", ""))
                if on_partial is not None:
                    on_partial(Transcript(partial.strip(), is_final=False, provider=self.name))
            elif kind == "transcript.text.done":
                return str(event.get("text", partial)).strip()
        raise http.malformed("transcription stream ended before transcript.text.done", partial, provider=self.name)

    def _parse(self, body: bytes) -> str:
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise http.malformed("transcription is not JSON", body, provider=self.name) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
            raise http.malformed("no 'text' in transcription", body, provider=self.name)
        return payload["text"].strip()

    async def open_stream(self, sample_rate: int = PIPELINE_RATE,
                          on_partial: PartialCallback | None = None) -> STTStream:
        return BufferedStream(self, sample_rate, on_partial)

    async def probe(self) -> None:
        await self.transcribe(_common.silence(0.3))


class BufferedStream:
    """Streaming shape over a batch API: buffer the utterance, transcribe it on `finish` (SSE partials if enabled)."""

    def __init__(self, stt: OpenAISTT, sample_rate: int, on_partial: PartialCallback | None) -> None:
        self._stt = stt
        self._rate = sample_rate
        self._on_partial = on_partial
        self._buf = bytearray()

    async def send(self, pcm: bytes) -> None:
        self._buf.extend(pcm)

    async def finish(self) -> Transcript:
        return await self._stt.transcribe(AudioChunk(bytes(self._buf), self._rate), self._on_partial)

    async def aclose(self) -> None:
        self._buf.clear()


class OpenAITTS(OpenAIAudio):
    """Streamed synthesis: PCM chunks are yielded as the response body arrives."""

    @property
    def sample_rate(self) -> int:
        """OpenAI's `pcm` is always 24 kHz; a compatible server may say otherwise through `sample_rate`."""
        if self.type == "openai":
            return PCM_RATE
        return self.config.sample_rate or PCM_RATE

    def _payload(self, text: str) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "input": text,
            "voice": self.config.voice or DEFAULTS[self.type]["voice"],
            "response_format": "pcm",
        }
        for option in ("instructions", "speed"):
            if self.config.options.get(option) is not None:
                payload[option] = self.config.options[option]
        return payload

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        rate = self.sample_rate
        total = 0
        try:
            async with self.client.stream("POST", "/audio/speech", json=self._payload(text)) as response:
                await http.raise_for_response(response, provider=self.name, message_of=error_message)
                content_type = response.headers.get("content-type", "")
                if content_type.startswith(("application/json", "text/")):
                    body = await response.aread()
                    raise http.malformed(f"expected audio, got {content_type.split(';')[0]}", body,
                                         provider=self.name)
                async for chunk in http.pcm_chunks(response, rate):  # a sample may straddle two reads
                    total += len(chunk.pcm)
                    yield chunk
        except (httpx.HTTPError, OSError, ProviderError) as exc:
            raise self._fail(exc) from None
        if total == 0:
            raise http.malformed("speech response had no audio", b"", provider=self.name)

    async def probe(self) -> None:
        async for _ in self.synthesize("ok"):
            pass


def _build(name: str, kind: Kind | None, config: ProviderConfig, ctx: BuildContext, *, type_name: str,
           base_url: str, api_key: str | None) -> OpenAISTT | OpenAITTS:
    if kind == "stt":
        return OpenAISTT(name, type_name, kind, config, base_url=base_url, api_key=api_key)
    if kind == "tts":
        return OpenAITTS(name, type_name, kind, config, base_url=base_url, api_key=api_key)
    raise ConfigError(
        f"provider {name}: type {type_name} cannot be used as {kind or 'an unspecified kind'}",
        hint="set kind: stt or kind: tts",
    )


def create(name: str, kind: Kind | None, config: ProviderConfig, ctx: BuildContext) -> OpenAISTT | OpenAITTS:
    """Factory for type `openai` (registry signature)."""
    base_url = config.base_url or DEFAULT_BASE_URL
    http.check_base_url(base_url, provider=name)  # before the key, so a bad URL never gets a key sent
    api_key = resolve_key(name, config, ctx, required=True)
    return _build(name, kind, config, ctx, type_name="openai", base_url=base_url, api_key=api_key)


def create_compatible(name: str, kind: Kind | None, config: ProviderConfig,
                      ctx: BuildContext) -> OpenAISTT | OpenAITTS:
    """Factory for type `openai-compatible`: base_url required, api_key optional."""
    if not config.base_url:
        raise ConfigError(f"provider {name}: type openai-compatible needs base_url",
                          hint="e.g. base_url: http://127.0.0.1:8000/v1")
    http.check_base_url(config.base_url, provider=name)
    api_key = resolve_key(name, config, ctx, required=False)
    return _build(name, kind, config, ctx, type_name="openai-compatible", base_url=config.base_url, api_key=api_key)
