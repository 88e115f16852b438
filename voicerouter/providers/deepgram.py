"""Deepgram: live STT over the /v1/listen WebSocket, batch STT and /v1/speak TTS over HTTP.

Everything vendor-specific about Deepgram lives here: the query parameters, `Authorization: Token`,
the `err_code`/`err_msg` envelope, the Results/Metadata events and the close codes of the live socket.

Table fields: model (STT, default nova-3), voice or model (TTS, default aura-2-thalia-en), language,
sample_rate (TTS: 8000/16000/24000/32000/48000), timeout_ms; options: endpointing, smart_format,
utterance_end_ms, keyterm (passed to /v1/listen), keepalive_s (idle KeepAlive interval, default 4),
transport (TTS: http, or websocket for the speak socket with text sent as it streams in), flush
(websocket: Flush at each sentence end, the default, or at each clause end).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx

from voicerouter.config.schema import ProviderConfig
from voicerouter.config.secrets import redact
from voicerouter.errors import (
    ConfigError,
    ProviderError,
    ProviderTimeout,
    RequestError,
    TransientProviderError,
)
from voicerouter.providers import http
from voicerouter.providers._common import build_vendor, probe_synthesis, silence, transport_of, wav_bytes
from voicerouter.providers.base import (
    PIPELINE_RATE,
    AudioChunk,
    BuildContext,
    Kind,
    PartialCallback,
    Transcript,
)
from voicerouter.providers.closing import close_later, reap
from voicerouter.providers.websocket import Generation, SocketTTS, close_socket, dropped, flush_rule, send_json
from voicerouter.providers.websocket import open_socket as ws_open

DEFAULT_BASE_URL = "https://api.deepgram.com"
DEFAULT_KEY_REF = "${DEEPGRAM_API_KEY}"
OPTIONS = frozenset({"endpointing", "smart_format", "utterance_end_ms", "keyterm", "keepalive_s", "transport", "flush"})
DEFAULT_STT_MODEL = "nova-3"
DEFAULT_TTS_MODEL = "aura-2-thalia-en"
TTS_RATES = (8000, 16000, 24000, 32000, 48000)  # linear16 rates /v1/speak accepts
KEEPALIVE_S = 4.0  # Deepgram closes an idle live socket after 10 s (NET-0001)


def create(
    name: str, kind: Kind, config: ProviderConfig, ctx: BuildContext
) -> DeepgramSTT | DeepgramTTS | DeepgramSocketTTS:
    """Factory named by the registry: a Deepgram STT or TTS provider for one routing-table entry."""
    tts = DeepgramSocketTTS if kind == "tts" and transport_of(name, config) == "websocket" else DeepgramTTS
    return build_vendor(
        name, kind, config, ctx, vendor="deepgram", classes={"stt": DeepgramSTT, "tts": tts},
        options=OPTIONS, key_ref=DEFAULT_KEY_REF, base_url=DEFAULT_BASE_URL,
    )


def error_message(body: bytes) -> str | None:
    """The message of Deepgram's error envelopes ({err_code, err_msg} or {category, message})."""
    data = json.loads(body)
    if not isinstance(data, dict):
        return None
    code = data.get("err_code") or data.get("error_code") or data.get("category")
    text = data.get("err_msg") or data.get("message") or data.get("error_message")
    if code and text:
        return f"{code}: {text}"
    return text or code


def _declared_rate(content_type: str) -> int | None:
    """The rate in `audio/l16;rate=24000`, which is what the bytes really are."""
    for part in content_type.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "rate" and value.isdigit():
            return int(value)
    return None


class _Base(http.ClientProvider):
    type = "deepgram"

    def __init__(self, name: str, config: ProviderConfig, *, key: str, base_url: str, timeout_s: float) -> None:
        super().__init__(name, config, base_url=base_url, timeout_s=timeout_s, headers={"Authorization": f"Token {key}"})
        self.base_url = base_url
        self.timeout_s = timeout_s
        self._key = key


class DeepgramSTT(_Base):
    kind: Kind = "stt"
    supports_streaming = True

    def __init__(self, name: str, config: ProviderConfig, **kw: Any) -> None:
        super().__init__(name, config, **kw)
        keepalive = config.options.get("keepalive_s", KEEPALIVE_S)
        if isinstance(keepalive, bool) or not isinstance(keepalive, int | float) or not 0 < keepalive <= 9:
            raise ConfigError(
                f"provider {name}: options.keepalive_s {keepalive!r} must be a number of seconds in (0, 9]",
                hint="Deepgram closes a live socket after 10 s without data",
            )
        self.keepalive_s = float(keepalive)

    def _query(self, **extra: Any) -> dict[str, str]:
        options = self.config.options
        query: dict[str, Any] = {"model": self.config.model or DEFAULT_STT_MODEL, "punctuate": "true"}
        if self.config.language:
            query["language"] = self.config.language
        for option in ("smart_format", "endpointing", "utterance_end_ms", "keyterm"):
            if option in options:
                value = options[option]
                query[option] = str(value).lower() if isinstance(value, bool) else value
        query.update(extra)
        return query

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        """Batch: the utterance as a WAV body to POST /v1/listen (raw PCM there is not documented)."""
        try:
            response = await self._client.post(
                "/v1/listen",
                params=self._query(),
                content=wav_bytes(audio.pcm, audio.sample_rate),
                headers={"Content-Type": "audio/wav"},
            )
        except httpx.HTTPError as exc:
            raise self._error(exc) from None
        await http.raise_for_response(response, provider=self.name, message_of=error_message)
        try:
            alternative = response.json()["results"]["channels"][0]["alternatives"][0]
            text = alternative["transcript"]
            if not isinstance(text, str):
                raise TypeError("transcript is not a string")
        except (ValueError, KeyError, IndexError, TypeError):
            raise http.malformed("listen result", response.content, provider=self.name) from None
        return Transcript(text.strip(), True, alternative.get("confidence"), self.name)

    async def open_stream(
        self, sample_rate: int = PIPELINE_RATE, on_partial: PartialCallback | None = None
    ) -> DeepgramStream:
        query = self._query(
            encoding="linear16", sample_rate=sample_rate, channels=1, interim_results="true"
        )
        url = http.ws_url(self.base_url) + "/v1/listen?" + urlencode(query)
        stream = DeepgramStream(self, url, on_partial)
        await stream.connect()
        return stream

    async def probe(self) -> None:
        """A 200 ms silent batch transcription: proves the key, the model and the route."""
        await self.transcribe(silence(0.2))


@functools.cache
def _ConnectionClosed() -> type[Exception]:  # noqa: N802 (it stands for the class)
    """websockets' ConnectionClosed, imported once: `send` runs for every 20 ms frame, and an import
    statement there went through the websockets package's lazy `__getattr__` each time."""
    from websockets.exceptions import ConnectionClosed

    return ConnectionClosed


class DeepgramStream:
    """One utterance on the live socket: binary audio in, interim partials out, finals gathered."""

    def __init__(self, provider: DeepgramSTT, url: str, on_partial: PartialCallback | None) -> None:
        self._provider = provider
        self._name = provider.name
        self._url = url
        self._on_partial = on_partial
        self._ws: Any = None
        self._finals: list[tuple[str, float | None]] = []
        self._error: BaseException | None = None  # a ProviderError, or the caller's on_partial failure
        self._done = asyncio.Event()  # Metadata seen or the socket closed
        self._last_send = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._ws_closed = False
        self._close_frame: tuple[int | None, str | None] | None = None  # (code, reason) the server sent

    async def connect(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidStatus

        timeout = self._provider.timeout_s
        try:
            self._ws = await connect(
                self._url,
                additional_headers={"Authorization": f"Token {self._provider._key}"},
                user_agent_header="voicerouter",
                open_timeout=timeout,
                ping_interval=None,  # KeepAlive messages keep the session alive, not pings
                max_size=2**22,
                # PCM barely compresses, and deflating every 20 ms frame was the largest CPU cost of a
                # served call's audio path: send it as it is.
                compression=None,
            )
        except InvalidStatus as exc:
            raise self._handshake_error(exc.response) from None
        except TimeoutError:
            raise ProviderTimeout(
                f"live socket not open after {timeout:g} s", provider=self._name
            ) from None
        except (InvalidHandshake, OSError) as exc:
            raise TransientProviderError(
                f"live socket failed to open: {type(exc).__name__}: {redact(str(exc))}", provider=self._name
            ) from None
        loop = asyncio.get_running_loop()
        self._last_send = loop.time()
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._keepalive())]

    def _handshake_error(self, response: Any) -> ProviderError:
        body = bytes(response.body or b"")
        message = response.headers.get("dg-error")
        if not message:
            try:
                message = error_message(body)
            except ValueError:
                message = None
        message = redact(message) if message else http.snippet(body)
        return http.error_for_status(
            response.status_code, message, provider=self._name, headers=response.headers
        )

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    continue  # the listen socket sends no audio; ignore stray binary frames
                self._handle(message)
                if self._done.is_set():
                    return
            self._close_frame = self._ws.close_code, self._ws.close_reason
        except ConnectionClosed as exc:
            self._close_frame = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else None
        except Exception as exc:  # typed provider errors, or on_partial raising: handed to send()/finish()
            self._error = exc
        finally:
            if not self._done.is_set() and self._error is None:
                self._error = self._closed_error()
            self._done.set()

    def _closed_error(self) -> ProviderError | None:
        """None for a normal close after CloseStream; otherwise the error the close code means."""
        if self._close_frame is None:
            return TransientProviderError("live socket dropped mid-stream (no close frame)", provider=self._name)
        code, reason = self._close_frame
        if code == 1000 and self._closing:
            return None
        reason = f" {redact(reason)}" if reason else ""
        what = {1008: "payload not decodable as audio", 1011: "server timeout or internal error"}.get(code or 0)
        detail = f" ({what})" if what else ""
        return TransientProviderError(f"live socket closed {code}{reason} mid-stream{detail}", provider=self._name)

    def _handle(self, message: str) -> None:
        try:
            event = json.loads(message)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            raise http.malformed("live event", message, provider=self._name) from None
        if kind == "Results":
            try:
                alternative = event["channel"]["alternatives"][0]
                text = str(alternative.get("transcript") or "").strip()
            except (KeyError, IndexError, TypeError, AttributeError):
                raise http.malformed("Results event", message, provider=self._name) from None
            if event.get("is_final"):
                if text:
                    self._finals.append((text, alternative.get("confidence")))
                self._partial("")
            elif text:
                self._partial(text)
        elif kind == "Metadata" and self._closing:
            self._done.set()
        elif kind in ("Error", "error"):
            detail = event.get("description") or event.get("error_message") or event.get("message") or message
            raise TransientProviderError(f"live socket error: {http.snippet(str(detail))}", provider=self._name)

    def _partial(self, interim: str) -> None:
        """Partials always cover the whole utterance so far: the finals, then the newest interim."""
        if self._on_partial is None:
            return
        text = " ".join([t for t, _ in self._finals] + ([interim] if interim else []))
        if text:
            self._on_partial(Transcript(text, is_final=False, provider=self._name))

    async def _keepalive(self) -> None:
        from websockets.exceptions import ConnectionClosed

        interval = self._provider.keepalive_s
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionClosed):
            while not self._done.is_set() and not self._closing:
                idle = loop.time() - self._last_send
                if idle >= interval:
                    await self._ws.send(json.dumps({"type": "KeepAlive"}))
                    self._last_send = loop.time()
                    continue
                await asyncio.sleep(interval - idle)

    async def send(self, pcm: bytes) -> None:
        if self._error is not None:
            raise self._error
        if not pcm:
            return  # an empty binary frame makes Deepgram close the socket
        if len(pcm) % 2:
            raise RequestError("PCM16 audio must have an even number of bytes", provider=self._name)
        timeout = self._provider.timeout_s
        try:
            # A server that stops reading fills the TCP window; do not block the pipeline forever on it.
            async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancellation
                await self._ws.send(pcm)
        except TimeoutError:
            raise ProviderTimeout(f"live socket took no audio for {timeout:g} s", provider=self._name) from None
        except _ConnectionClosed():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # the reader learns why it closed, and sets _done
                    await self._done.wait()
            raise (self._error or self._closed_error() or TransientProviderError(
                "live socket closed while sending audio", provider=self._name
            )) from None
        self._last_send = asyncio.get_running_loop().time()

    async def finish(self) -> Transcript:
        """Finalize, then CloseStream; every is_final transcript up to Metadata makes the utterance."""
        from websockets.exceptions import ConnectionClosed

        if self._error is not None:
            raise self._error
        self._closing = True
        try:
            await self._ws.send(json.dumps({"type": "Finalize"}))
            await self._ws.send(json.dumps({"type": "CloseStream"}))
        except ConnectionClosed:
            pass  # the reader reports why it closed
        timeout = self._provider.timeout_s
        try:
            async with asyncio.timeout(timeout):
                await self._done.wait()
        except TimeoutError:
            await self.aclose()
            raise ProviderTimeout(f"no final transcript {timeout:g} s after CloseStream", provider=self._name) from None
        await self.aclose()
        if self._error is not None:
            raise self._error
        confidences = [c for _, c in self._finals if isinstance(c, int | float)]
        return Transcript(
            " ".join(t for t, _ in self._finals),
            is_final=True,
            confidence=sum(confidences) / len(confidences) if confidences else None,
            provider=self._name,
        )

    async def aclose(self) -> None:
        """Stop the reader and keepalive; the close handshake runs in the background, off the caller's path."""
        tasks, self._tasks = self._tasks, []
        await reap(tasks)
        if self._ws is not None and not self._ws_closed:
            self._ws_closed = True
            close_later(self._ws.close())


class DeepgramTTS(_Base):
    kind: Kind = "tts"

    def __init__(self, name: str, config: ProviderConfig, **kw: Any) -> None:
        super().__init__(name, config, **kw)
        self.sample_rate = config.sample_rate or 24000
        if self.sample_rate not in TTS_RATES:
            raise ConfigError(
                f"provider {name}: deepgram speak has no linear16 rate {self.sample_rate}",
                hint=f"sample_rate: one of {', '.join(map(str, TTS_RATES))}",
            )
        self.model = config.voice or config.model or DEFAULT_TTS_MODEL

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """POST /v1/speak with container=none: raw PCM16 streamed as it is generated."""
        query = {"model": self.model, "encoding": "linear16", "container": "none", "sample_rate": self.sample_rate}
        try:
            async with self._client.stream("POST", "/v1/speak", params=query, json={"text": text}) as response:
                await http.raise_for_response(response, provider=self.name, message_of=error_message)
                content_type = response.headers.get("content-type", "")
                if not content_type.startswith(("audio/", "application/octet-stream")):
                    raise http.malformed(f"content-type {content_type or 'missing'}", await response.aread(),
                                         provider=self.name)
                rate = _declared_rate(content_type) or self.sample_rate
                async for chunk in http.pcm_chunks(response, rate):
                    yield chunk
        except httpx.HTTPError as exc:
            raise self._error(exc) from None

    async def probe(self) -> None:
        """A one-word synthesis, read to its first audio chunk."""
        await probe_synthesis(self, what="speak")


class DeepgramSocketTTS(SocketTTS):
    """TTS over the speak WebSocket: `Speak` text as it comes, `Flush` at each sentence end, binary
    audio back until `Flushed`; `Clear` on barge-in. Idle sockets are kept for the next generation."""

    type = "deepgram"
    kind: Kind = "tts"

    def __init__(self, name: str, config: ProviderConfig, *, key: str, base_url: str, timeout_s: float) -> None:
        self.name = name
        self.config = config
        self.sample_rate = config.sample_rate or 24000
        if self.sample_rate not in TTS_RATES:
            raise ConfigError(
                f"provider {name}: deepgram speak has no linear16 rate {self.sample_rate}",
                hint=f"sample_rate: one of {', '.join(map(str, TTS_RATES))}",
            )
        query = {"model": config.voice or config.model or DEFAULT_TTS_MODEL, "encoding": "linear16",
                 "sample_rate": self.sample_rate}
        self.url = http.ws_url(base_url) + "/v1/speak?" + urlencode(query)
        self.timeout_s = timeout_s
        self._key = key
        self._idle: list[Any] = []
        self.flush_at = flush_rule(name, config.options)

    async def _start(self) -> Generation:
        from websockets.protocol import State

        while self._idle:
            ws = self._idle.pop()
            if ws.state is State.OPEN:
                return _Speak(self, ws)
            close_socket(ws)
        ws = await ws_open(self.url, {"Authorization": f"Token {self._key}"}, provider=self.name,
                           timeout_s=self.timeout_s, message_of=error_message)
        return _Speak(self, ws)

    async def probe(self) -> None:
        """A one-word synthesis over the speak socket, read to its first audio."""
        await probe_synthesis(self, what="speak socket")

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for ws in idle:
            close_socket(ws)


class _Speak(Generation):
    def __init__(self, provider: DeepgramSocketTTS, ws: Any) -> None:
        super().__init__()
        self.provider = provider
        self.ws = ws
        self.pending = ""  # text sent since the last Flush
        self.flushes = 0  # Flush messages sent
        self.flushed = 0  # Flushed answers received
        self.ended = False
        self.finished = False
        self.reader = asyncio.create_task(self.read())

    async def _flush(self) -> None:
        self.flushes += 1
        self.pending = ""
        await send_json(self.ws, {"type": "Flush"}, provider=self.provider.name)

    async def send(self, text: str) -> None:
        self.pending += text
        await send_json(self.ws, {"type": "Speak", "text": text}, provider=self.provider.name)
        if self.provider.flush_at.search(self.pending):
            await self._flush()

    async def end(self) -> None:
        if self.pending.strip():
            await self._flush()
        self.ended = True
        self._check_done()

    def _check_done(self) -> None:
        if self.ended and self.flushed >= self.flushes and not self.finished:
            self.finished = True
            self.queue.put_nowait(None)

    async def read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        name = self.provider.name
        try:
            async for frame in self.ws:
                if isinstance(frame, bytes):
                    if frame:
                        self.queue.put_nowait(AudioChunk(frame[: len(frame) - len(frame) % 2],
                                                         self.provider.sample_rate))
                    continue
                try:
                    event = json.loads(frame)
                    kind = event.get("type")
                except (ValueError, AttributeError):
                    self.queue.put_nowait(http.malformed("message is not a JSON object", frame, provider=name))
                    return
                if kind == "Flushed":
                    self.flushed += 1
                    self._check_done()
                elif kind == "Error" or "err_code" in event:
                    self.queue.put_nowait(TransientProviderError(
                        redact(str(event.get("description") or event.get("err_msg") or "speak failed")), provider=name))
                    return
            self.queue.put_nowait(TransientProviderError(
                f"speak socket closed by the server (code {self.ws.close_code})", provider=name))
        except ConnectionClosed as exc:
            self.queue.put_nowait(dropped(exc, provider=name))

    async def close(self, *, cancelled: bool) -> None:
        await reap(self.reader)
        if self.finished and not cancelled:
            self.provider._idle.append(self.ws)  # ready for the next sentence
            return
        with contextlib.suppress(ProviderError):  # barge-in: drop what is buffered and being spoken
            await send_json(self.ws, {"type": "Clear"}, provider=self.provider.name)
        close_socket(self.ws)
