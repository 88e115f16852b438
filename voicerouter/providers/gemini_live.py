"""Google's Gemini Live API (BidiGenerateContent over WebSocket) as a speech-to-speech provider.

voicerouter decides turns locally, so the server's activity detection is off: a turn's audio is
framed by `activityStart` / `activityEnd` realtime input, and the reply streams back as
`serverContent` (model audio parts at 24 kHz, output and input transcriptions) until `turnComplete`.
The conversation so far is replayed at connect as `clientContent` turns (user / model), which is
how a session that fails over from another vendor keeps its history.

Auth is the `x-goog-api-key` header (as the google-genai SDK sends it). Failures arrive as close
frames: 1008 (policy: a bad key, a model not allowed), 1007 (invalid argument), 1011 (internal or
quota); each becomes a typed error naming the provider instance.

Table fields: model (default gemini-live-2.5-flash-preview), voice (prebuilt voice, default Puck),
language (speechConfig.languageCode), timeout_ms; options: api_version (default v1, the SDK's).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from voicerouter.audio.convert import StreamResampler
from voicerouter.config.schema import ProviderConfig
from voicerouter.config.secrets import redact
from voicerouter.errors import (
    AuthError,
    ConfigError,
    ProviderError,
    ProviderTimeout,
    RateLimitedError,
    RequestError,
    TransientProviderError,
)
from voicerouter.providers import http
from voicerouter.providers._common import api_key, check_options
from voicerouter.providers.base import PIPELINE_RATE, AudioChunk, BuildContext, Conversation, Kind, S2SEvent
from voicerouter.providers.s2s_socket import S2SSocketProvider, S2SSocketSession
from voicerouter.providers.websocket import open_socket

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_KEY_REF = "${GEMINI_API_KEY}"
DEFAULT_MODEL = "gemini-live-2.5-flash-preview"
DEFAULT_VOICE = "Puck"
DEFAULT_API_VERSION = "v1"  # google-genai's default for the Gemini API
DEFAULT_TIMEOUT_S = 30.0
INPUT_RATE = 16000  # what the Live API takes natively
OUTPUT_RATE = 24000  # what it speaks
OPTIONS = frozenset({"api_version"})
_RATE = re.compile(r"rate=(\d+)")


def create(name: str, kind: Kind | None, config: ProviderConfig, ctx: BuildContext) -> GeminiLive:
    """Factory for type `gemini-live` (registry signature)."""
    if kind not in (None, "s2s"):
        raise ConfigError(f"provider {name}: type gemini-live is speech-to-speech only", hint="set kind: s2s")
    check_options(name, "gemini-live", config, OPTIONS)
    version = str(config.options.get("api_version", DEFAULT_API_VERSION))
    if version not in ("v1", "v1beta", "v1alpha"):
        raise ConfigError(f"provider {name}: options.api_version must be v1, v1beta or v1alpha, not {version!r}")
    base_url = http.check_base_url(config.base_url or DEFAULT_BASE_URL, provider=name)
    key = api_key(name, config, ctx, DEFAULT_KEY_REF)
    return GeminiLive(name, config, base_url=base_url, key=key, api_version=version)


def close_error(code: int | None, reason: str, *, provider: str) -> ProviderError:
    """A close frame from the Live API as a typed error."""
    text = f"WebSocket closed (code {code}{': ' + redact(reason) if reason else ''})"
    lowered = reason.lower()
    if "quota" in lowered or "resource_exhausted" in lowered or "rate limit" in lowered:
        return RateLimitedError(text, provider=provider)
    if code == 1008 and ("key" in lowered or "permission" in lowered or "auth" in lowered):
        return AuthError(text, provider=provider, hint="check the API key and its permissions")
    if code in (1007, 1008):
        return RequestError(text, provider=provider)
    return TransientProviderError(text, provider=provider)


def history_turns(history: Conversation) -> list[dict[str, Any]]:
    """The conversation so far as Live `clientContent` turns (assistant turns are the model's)."""
    turns = []
    for message in history.messages:
        if message.role == "system" or not message.text:
            continue
        turns.append({"role": "model" if message.role == "assistant" else "user", "parts": [{"text": message.text}]})
    return turns


def _get(obj: dict[str, Any], camel: str) -> Any:
    """A field by its proto-JSON name, or its snake_case spelling (both are accepted on the wire)."""
    if camel in obj:
        return obj[camel]
    return obj.get(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel))


class GeminiLive(S2SSocketProvider["LiveSession"]):
    """The S2S provider: one WebSocket per session (`connect`)."""

    kind: Kind = "s2s"
    type = "gemini-live"

    def __init__(self, name: str, config: ProviderConfig, *, base_url: str, key: str, api_version: str) -> None:
        self.name = name
        self.config = config
        self.model = config.model or DEFAULT_MODEL
        self.url = (f"{http.ws_url(base_url)}/ws/google.ai.generativelanguage.{api_version}"
                    ".GenerativeService.BidiGenerateContent")
        self.timeout_s = config.timeout_ms / 1000 if config.timeout_ms else DEFAULT_TIMEOUT_S
        self._key = key

    def setup(self, instructions: str | None) -> dict[str, Any]:
        speech: dict[str, Any] = {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": self.config.voice or DEFAULT_VOICE}}}
        if self.config.language:
            speech["languageCode"] = self.config.language
        model = self.model if self.model.startswith("models/") else f"models/{self.model}"
        setup: dict[str, Any] = {
            "model": model,
            "generationConfig": {"responseModalities": ["AUDIO"], "speechConfig": speech},
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            "realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}},
        }
        if instructions:
            setup["systemInstruction"] = {"parts": [{"text": instructions}], "role": "user"}
        return {"setup": setup}

    async def _open(self) -> Any:
        return await open_socket(self.url, {"x-goog-api-key": self._key}, provider=self.name,
                                 timeout_s=min(10.0, self.timeout_s))

    def _session(self, ws: Any, instructions: str | None) -> LiveSession:
        return LiveSession(self, ws)

    async def _start(self, session: LiveSession, instructions: str | None, history: Conversation) -> None:
        await session.start(self.setup(instructions), history_turns(history))

    def __repr__(self) -> str:
        return f"<GeminiLive {self.name} {self.model} {self.url}>"


class LiveSession(S2SSocketSession):
    """One live conversation; a reader task drains the socket into a queue of server messages."""

    def __init__(self, provider: GeminiLive, ws: Any) -> None:
        super().__init__(provider, ws)
        self._resampler: StreamResampler | None = None
        self._in_activity = False  # activityStart sent for the turn being spoken
        self._abandoned = False

    def _close_error(self, code: int | None, reason: str, *, dropped: bool) -> ProviderError:
        return close_error(code, reason, provider=self.name)

    async def start(self, setup: dict[str, Any], turns: list[dict[str, Any]]) -> None:
        try:
            await self._send(setup)
        except ProviderError:
            await asyncio.wait([self._reader], timeout=1.0)
            if self._dead is not None:  # closed at once (a bad key): the close frame says why
                raise self._dead from None
            raise
        while True:
            event = await self._next()
            if _get(event, "setupComplete") is not None:
                break
        if turns:
            await self._send({"clientContent": {"turns": turns, "turnComplete": False}})

    async def send_audio(self, pcm: bytes, sample_rate: int = PIPELINE_RATE) -> None:
        if self._resampler is None or self._resampler.src_rate != sample_rate:
            self._resampler = StreamResampler(sample_rate, INPUT_RATE)
        await self._append(self._resampler.process(pcm))

    async def _append(self, pcm: bytes) -> None:
        if not pcm:
            return
        if not self._in_activity:
            self._in_activity = True
            await self._send({"realtimeInput": {"activityStart": {}}})
        blob = {"data": base64.b64encode(pcm).decode(), "mimeType": f"audio/pcm;rate={INPUT_RATE}"}
        await self._send({"realtimeInput": {"audio": blob}})

    async def respond(self) -> AsyncIterator[S2SEvent]:
        await self._settle()
        if self._resampler is not None:
            await self._append(self._resampler.flush())
        if self._in_activity:
            self._in_activity = False
            await self._send({"realtimeInput": {"activityEnd": {}}})
        else:  # no audio this turn: ask for a reply to the conversation as it stands
            await self._send({"clientContent": {"turnComplete": True}})
        finished = False
        try:
            async for event in self._events_of_turn():
                yield event
            finished = True
        finally:
            if not finished:
                self._abandoned = True  # the next turn's activityStart interrupts it; _settle skips the rest

    async def _events_of_turn(self) -> AsyncIterator[S2SEvent]:
        reply: list[str] = []
        heard: list[str] = []
        while True:
            event = await self._next()
            content = _get(event, "serverContent")
            if content is None:
                continue  # usageMetadata, goAway, sessionResumptionUpdate: nothing to say to the session
            heard_piece = (_get(content, "inputTranscription") or {}).get("text")
            if heard_piece:
                heard.append(heard_piece)
            said = (_get(content, "outputTranscription") or {}).get("text")
            if said:
                reply.append(said)
                yield S2SEvent("reply_text", text=said)
            for part in (_get(content, "modelTurn") or {}).get("parts") or []:
                blob = _get(part, "inlineData")
                if not blob:
                    continue
                try:
                    pcm = base64.b64decode(blob.get("data") or "", validate=True)
                except ValueError:
                    raise http.malformed("audio part is not base64", str(blob.get("data")), provider=self.name) from None
                match = _RATE.search(str(_get(blob, "mimeType") or ""))
                rate = int(match.group(1)) if match else OUTPUT_RATE
                if pcm:
                    yield S2SEvent("audio", audio=AudioChunk(pcm[: len(pcm) - len(pcm) % 2], rate))
            if _get(content, "turnComplete"):
                break
        if heard:
            yield S2SEvent("user_transcript", text="".join(heard).strip())
        yield S2SEvent("done", text="".join(reply))

    async def _settle(self) -> None:
        """Before a new turn: skip what is left of an abandoned reply, up to its turnComplete."""
        if not self._abandoned:
            return
        self._abandoned = False
        with contextlib.suppress(ProviderTimeout):
            while True:
                content = _get(await self._next(2.0), "serverContent") or {}
                if _get(content, "turnComplete"):  # an interrupted reply ends with it too
                    return
