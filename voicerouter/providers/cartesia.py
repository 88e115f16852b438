"""Cartesia: TTS over POST /tts/bytes with raw PCM16 output, streamed as the body arrives.

Every request names a dated `Cartesia-Version`; errors are plain `Title: Message` text on older
versions and a JSON `{error_code, title, message}` envelope from 2026-03-01 on, so both are parsed.

With `options.transport: websocket` the TTS speaks over `/tts/websocket` instead: one socket per
provider, one context per generation (`continue` for text streamed in, `cancel` on barge-in).

Table fields: voice (voice id), model (default sonic-3), language (sent only when set), sample_rate
(default 24000); options: version (Cartesia-Version date, default 2026-08-14, the current SDK's),
auth (bearer, the documented server-side scheme, or x-api-key), speed, transport (http or
websocket), max_buffer_delay_ms (websocket: how long the server may buffer streamed text).
The voice goes as a plain id from version 2026-08-14 on and as `{"mode": "id", "id": ...}` before.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

from voicerouter.config.schema import ProviderConfig
from voicerouter.config.secrets import redact
from voicerouter.errors import ConfigError, ProviderError, TransientProviderError
from voicerouter.providers import http
from voicerouter.providers._common import build_vendor, pcm_rate, probe_synthesis, transport_of
from voicerouter.providers.base import AudioChunk, BuildContext, Kind
from voicerouter.providers.closing import reap
from voicerouter.providers.websocket import Generation, SocketTTS, close_socket, dropped, open_socket, send_json

DEFAULT_BASE_URL = "https://api.cartesia.ai"
DEFAULT_KEY_REF = "${CARTESIA_API_KEY}"
OPTIONS = frozenset({"version", "auth", "speed", "transport", "max_buffer_delay_ms"})
DEFAULT_VERSION = "2026-08-14"  # what cartesia-python 4.x sends
PLAIN_VOICE_FROM = "2026-08-14"  # the first version whose voice is a plain id (no `mode`)
DEFAULT_MODEL = "sonic-3"
DEFAULT_VOICE = "694f9389-aac1-45b6-b726-9d9369183238"  # the voice of the vendor's quickstart
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
DEFAULT_RATE = 24000
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def create(name: str, kind: Kind, config: ProviderConfig, ctx: BuildContext) -> CartesiaTTS | CartesiaSocketTTS:
    """Factory named by the registry: a Cartesia TTS provider for one routing-table entry."""
    cls = CartesiaSocketTTS if transport_of(name, config) == "websocket" else CartesiaTTS
    return build_vendor(
        name, kind, config, ctx, vendor="cartesia", classes={"tts": cls},
        options=OPTIONS, key_ref=DEFAULT_KEY_REF, base_url=DEFAULT_BASE_URL,
    )


def _settings(name: str, config: ProviderConfig, key: str) -> tuple[int, str, dict[str, str]]:
    """(sample rate, Cartesia-Version, request headers) of a table entry, checked."""
    options = config.options
    rate = pcm_rate(name, config, DEFAULT_RATE, PCM_RATES, what="cartesia has no raw output")
    version = str(options.get("version", DEFAULT_VERSION))
    if not _VERSION.match(version):
        raise ConfigError(
            f"provider {name}: options.version {version!r} is not a Cartesia-Version date",
            hint=f"e.g. version: {DEFAULT_VERSION}",
        )
    auth = str(options.get("auth", "bearer")).lower()
    if auth not in ("x-api-key", "bearer"):
        raise ConfigError(f"provider {name}: options.auth must be x-api-key or bearer, not {auth!r}")
    headers = {"Cartesia-Version": version}
    headers.update({"X-API-Key": key} if auth == "x-api-key" else {"Authorization": f"Bearer {key}"})
    return rate, version, headers


def _generation(config: ProviderConfig, version: str, rate: int, text: str) -> dict[str, Any]:
    """The body of a generation (/tts/bytes, or the first message of a WebSocket context)."""
    voice_id = config.voice or DEFAULT_VOICE
    body: dict[str, Any] = {
        "model_id": config.model or DEFAULT_MODEL,
        "transcript": text,
        "voice": voice_id if version >= PLAIN_VOICE_FROM else {"mode": "id", "id": voice_id},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": rate},
    }
    if config.language:
        body["language"] = config.language.split("-")[0].lower()
    if "speed" in config.options:
        body["speed"] = config.options["speed"]
    return body


def error_message(body: bytes) -> str | None:
    """JSON `{error_code, title, message}` (new versions) or plain `Title: Message` text (older ones)."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text or None
    if not isinstance(data, dict):
        return None
    code, title, message = data.get("error_code"), data.get("title"), data.get("message") or data.get("error")
    head = " ".join(str(p) for p in (code, title) if p)
    if head and message:
        return f"{head}: {message}"
    return head or (str(message) if message else None)


class CartesiaTTS(http.ClientProvider):
    type = "cartesia"
    kind: Kind = "tts"

    def __init__(self, name: str, config: ProviderConfig, *, key: str, base_url: str, timeout_s: float) -> None:
        self.sample_rate, self.version, headers = _settings(name, config, key)
        super().__init__(name, config, base_url=base_url, timeout_s=timeout_s, headers=headers)

    def _body(self, text: str) -> dict[str, Any]:
        return _generation(self.config, self.version, self.sample_rate, text)

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """POST /tts/bytes (raw pcm_s16le): audio chunks as the HTTP body streams in."""
        async for chunk in self._post_for_pcm(
            "/tts/bytes", self.sample_rate, message_of=error_message, json=self._body(text)
        ):
            yield chunk

    async def probe(self) -> None:
        """A one-word synthesis, read to its first audio chunk."""
        await probe_synthesis(self, what="tts/bytes")


class CartesiaSocketTTS(SocketTTS):
    """TTS over `/tts/websocket`: one socket per provider, shared by its generations (one context each)."""

    type = "cartesia"
    kind: Kind = "tts"

    def __init__(self, name: str, config: ProviderConfig, *, key: str, base_url: str, timeout_s: float) -> None:
        self.name = name
        self.config = config
        self.sample_rate, self.version, self._headers = _settings(name, config, key)
        self.url = http.ws_url(base_url) + "/tts/websocket"
        self.timeout_s = timeout_s
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._contexts: dict[str, _Context] = {}
        self._lock = asyncio.Lock()

    async def _socket(self) -> Any:
        async with self._lock:
            if self._ws is None:
                self._ws = await open_socket(self.url, self._headers, provider=self.name, timeout_s=self.timeout_s,
                                             message_of=error_message)
                self._reader = asyncio.create_task(self._read(self._ws), name=f"cartesia-ws-{self.name}")
            return self._ws

    async def _start(self) -> Generation:
        ws = await self._socket()
        context = _Context(self, ws, uuid.uuid4().hex)
        self._contexts[context.id] = context
        return context

    async def _read(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        failure: ProviderError
        try:
            async for frame in ws:
                try:
                    event = json.loads(frame)
                    context = self._contexts.get(event.get("context_id") or "")
                except (ValueError, AttributeError):
                    failure = http.malformed("message is not a JSON object", frame, provider=self.name)
                    break
                if context is not None:
                    context.take(event)
                elif event.get("type") == "error":  # an error for no context: the socket's own failure
                    failure = _event_error(event, provider=self.name)
                    break
            else:
                failure = TransientProviderError(f"WebSocket closed by the server (code {ws.close_code})",
                                                 provider=self.name)
        except ConnectionClosed as exc:
            failure = dropped(exc, provider=self.name)
        if self._ws is ws:
            self._ws = None  # the next generation opens a new socket
        close_socket(ws)
        for context in list(self._contexts.values()):
            if context.ws is ws:
                context.queue.put_nowait(failure)

    async def probe(self) -> None:
        """A one-word synthesis over the socket, read to its first audio."""
        await probe_synthesis(self, what="tts/websocket")

    async def aclose(self) -> None:
        ws, self._ws = self._ws, None
        if self._reader is not None:
            await reap(self._reader)
        close_socket(ws)


class _Context(Generation):
    """One generation: a `context_id` on the shared socket; text goes with `continue: true`."""

    def __init__(self, provider: CartesiaSocketTTS, ws: Any, context_id: str) -> None:
        super().__init__()
        self.provider = provider
        self.ws = ws
        self.id = context_id
        self.done = False
        self.words: list[tuple[str, float, float]] = []  # word timestamps not yet attached to audio

    def _message(self, text: str, *, more: bool) -> dict[str, Any]:
        p = self.provider
        message = {"context_id": self.id, **_generation(p.config, p.version, p.sample_rate, text), "continue": more,
                   "add_timestamps": True}  # word ends let a failover resume at the first unheard word
        if "max_buffer_delay_ms" in p.config.options:
            message["max_buffer_delay_ms"] = int(p.config.options["max_buffer_delay_ms"])
        return message

    async def send(self, text: str) -> None:
        await send_json(self.ws, self._message(text, more=True), provider=self.provider.name)

    async def end(self) -> None:
        await send_json(self.ws, self._message("", more=False), provider=self.provider.name)

    def take(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "chunk":
            try:
                pcm = base64.b64decode(event.get("data") or "", validate=True)
            except ValueError:
                self.queue.put_nowait(http.malformed("chunk data is not base64", str(event.get("data")),
                                                     provider=self.provider.name))
                return
            if pcm:
                words, self.words = tuple(self.words), []
                self.queue.put_nowait(AudioChunk(pcm[: len(pcm) - len(pcm) % 2], self.provider.sample_rate, words))
        elif kind == "timestamps":
            stamps = event.get("word_timestamps") or {}
            with contextlib.suppress(TypeError, ValueError):
                self.words.extend((str(w), float(a), float(b)) for w, a, b in
                                  zip(stamps.get("words") or [], stamps.get("start") or [], stamps.get("end") or [],
                                      strict=False))
        elif kind == "done":
            self.done = True
            self.queue.put_nowait(None)
        elif kind == "error":
            self.done = True
            self.queue.put_nowait(_event_error(event, provider=self.provider.name))

    async def close(self, *, cancelled: bool) -> None:
        self.provider._contexts.pop(self.id, None)
        if cancelled and not self.done:  # barge-in or a failure: the server stops this context
            with contextlib.suppress(ProviderError):
                await send_json(self.ws, {"context_id": self.id, "cancel": True}, provider=self.provider.name)


def _event_error(event: dict[str, Any], *, provider: str) -> ProviderError:
    """A WebSocket `error` message (new `{status_code, error_code, title, message}` or old `{error}`) -> typed error."""
    status = event.get("status_code")
    message = error_message(json.dumps(event).encode()) or "generation failed"
    if isinstance(status, int) and status >= 400:
        return http.error_for_status(status, redact(message), provider=provider)
    return TransientProviderError(redact(message), provider=provider)
