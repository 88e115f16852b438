"""AssemblyAI Universal Streaming (v3) STT over WebSocket: `wss://streaming.assemblyai.com/v3/ws`.

Audio goes as binary frames of 50-1000 ms (this client sends 50 ms frames); the server answers
`Begin`, then `Turn` messages (`end_of_turn: false` as words arrive, `true` when a turn ends), and
`Termination` after the client's `Terminate`. voicerouter ends an utterance itself, so `finish()`
sends `ForceEndpoint` (the turn ends now) and `Terminate`; the utterance is every ended turn.

The service refuses audio sent faster than real time (close 3007). Live audio never is; a backlog
(a failover replaying a buffered utterance, or `transcribe()`) is paced to real time after a lead of
`BACKLOG_LEAD_S` (the documents give no tolerance; one second is this client's choice).

Auth is `Authorization: KEY` (the raw key, as the SDK sends it) plus `AssemblyAI-Version`. Close
codes: 1008 and 4001-4003 auth/payment, 3009/4029/4102 too many sessions or too fast, 3006/3007/4000/
4101 bad request or audio, 3005/3008/1011/1013 server side; each becomes a typed error.

Table fields: model (speech_model, default universal-streaming-english), timeout_ms; options:
format_turns, end_of_turn_confidence_threshold, min_turn_silence, max_turn_silence, keyterms_prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import urlencode

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
from voicerouter.providers._common import api_key, check_options, timeout_of
from voicerouter.providers.base import PIPELINE_RATE, AudioChunk, BuildContext, Kind, PartialCallback, Transcript
from voicerouter.providers.closing import reap
from voicerouter.providers.websocket import close_socket, open_socket

DEFAULT_BASE_URL = "https://streaming.assemblyai.com"
DEFAULT_KEY_REF = "${ASSEMBLYAI_API_KEY}"
DEFAULT_MODEL = "universal-streaming-english"
API_VERSION = "2025-05-12"  # the AssemblyAI-Version the SDK sends
FRAME_S = 0.05  # 50 ms, the documented minimum and recommended frame
BACKLOG_LEAD_S = 1.0
OPTIONS = frozenset({"format_turns", "end_of_turn_confidence_threshold", "min_turn_silence", "max_turn_silence",
                     "keyterms_prompt"})

_AUTH = {1008, 4001, 4002, 4003}
_RATE = {3009, 4029, 4102}
_REQUEST = {3006, 3007, 4000, 4101, 4032, 4033, 4034}


def create(name: str, kind: Kind | None, config: ProviderConfig, ctx: BuildContext) -> AssemblyAISTT:
    """Factory for type `assemblyai` (registry signature)."""
    if kind not in (None, "stt"):
        raise ConfigError(f"provider {name}: assemblyai streaming is speech-to-text only", hint="set kind: stt")
    check_options(name, "assemblyai", config, OPTIONS)
    base_url = http.check_base_url(config.base_url or DEFAULT_BASE_URL, provider=name)
    return AssemblyAISTT(name, config, base_url=base_url, key=api_key(name, config, ctx, DEFAULT_KEY_REF))


def close_error(code: int | None, reason: str, *, provider: str) -> ProviderError:
    """A close frame (or Error message code) as the typed error it means."""
    text = f"streaming socket closed (code {code}{': ' + redact(reason) if reason else ''})"
    if code in _AUTH:
        return AuthError(text, provider=provider, hint="check the API key and the account")
    if code in _RATE:
        return RateLimitedError(text, provider=provider)
    if code in _REQUEST:
        return RequestError(text, provider=provider)
    return TransientProviderError(text, provider=provider)


class AssemblyAISTT:
    type = "assemblyai"
    kind: Kind = "stt"
    supports_streaming = True

    def __init__(self, name: str, config: ProviderConfig, *, base_url: str, key: str) -> None:
        self.name = name
        self.config = config
        self.url = http.ws_url(base_url) + "/v3/ws"
        self.timeout_s = timeout_of(config)
        self._key = key

    def query(self, sample_rate: int) -> dict[str, Any]:
        query: dict[str, Any] = {"sample_rate": sample_rate, "encoding": "pcm_s16le",
                                 "speech_model": self.config.model or DEFAULT_MODEL}
        for option in sorted(OPTIONS):
            if option in self.config.options:
                value = self.config.options[option]
                query[option] = (json.dumps(value) if isinstance(value, list) else
                                 str(value).lower() if isinstance(value, bool) else value)
        return query

    async def open_stream(self, sample_rate: int = PIPELINE_RATE,
                          on_partial: PartialCallback | None = None) -> AssemblyAIStream:
        url = f"{self.url}?{urlencode(self.query(sample_rate))}"
        ws = await open_socket(url, {"Authorization": self._key, "AssemblyAI-Version": API_VERSION},
                               provider=self.name, timeout_s=min(10.0, self.timeout_s))
        stream = AssemblyAIStream(self, ws, sample_rate, on_partial)
        try:
            await stream.begin()
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        """A whole utterance through one streaming session (the API has no batch endpoint here)."""
        stream = await self.open_stream(audio.sample_rate)
        try:
            await stream.send(audio.pcm)
            return await stream.finish()
        finally:
            await stream.aclose()

    async def probe(self) -> None:
        """Open a session (Begin proves the key and the parameters), then end it."""
        stream = await self.open_stream(PIPELINE_RATE)
        await stream.aclose()

    async def aclose(self) -> None:
        return None


class AssemblyAIStream:
    """One utterance: 50 ms frames out (paced to real time past a lead), Turns in, ended turns kept."""

    def __init__(self, provider: AssemblyAISTT, ws: Any, sample_rate: int, on_partial: PartialCallback | None) -> None:
        self.provider = provider
        self.name = provider.name
        self._ws = ws
        self._rate = sample_rate
        self._frame = max(2, int(sample_rate * FRAME_S) * 2)
        self._pending = b""
        self._on_partial = on_partial
        self._turns: dict[int, tuple[str, bool]] = {}  # turn_order -> (transcript, ended)
        self._begun = asyncio.Event()
        self._done = asyncio.Event()
        self._error: ProviderError | None = None
        self._terminating = False
        self._sent_s = 0.0
        self._started = 0.0
        self._reader = asyncio.create_task(self._read(), name=f"assemblyai-reader-{provider.name}")

    async def begin(self) -> None:
        try:
            async with asyncio.timeout(self.provider.timeout_s):
                await asyncio.wait([asyncio.ensure_future(self._begun.wait()),
                                    asyncio.ensure_future(self._done.wait())], return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            raise ProviderTimeout(f"no Begin {self.provider.timeout_s:g} s after connecting", provider=self.name) from None
        if not self._begun.is_set():
            raise self._error or TransientProviderError("socket closed before Begin", provider=self.name)
        self._started = asyncio.get_running_loop().time()

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for frame in self._ws:
                try:
                    event = json.loads(frame)
                    kind = event.get("type")
                except (ValueError, AttributeError):
                    raise http.malformed("message is not a JSON object", frame, provider=self.name) from None
                if kind == "Begin":
                    self._begun.set()
                elif kind == "Turn":
                    self._turn(event)
                elif kind == "Termination":
                    self._done.set()
                    return
                elif kind == "Error":
                    code = event.get("error_code")
                    raise close_error(code if isinstance(code, int) else None, str(event.get("error") or ""),
                                      provider=self.name)
            self._error = close_error(self._ws.close_code, self._ws.close_reason or "", provider=self.name)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            self._error = close_error(rcvd.code if rcvd else 1006, rcvd.reason if rcvd else "", provider=self.name)
        except ProviderError as exc:
            self._error = exc
        finally:
            self._done.set()

    def _turn(self, event: dict[str, Any]) -> None:
        try:
            order = int(event["turn_order"])
            text = str(event.get("transcript") or "").strip()
        except (KeyError, TypeError, ValueError):
            raise http.malformed("Turn message", json.dumps(event), provider=self.name) from None
        ended = bool(event.get("end_of_turn"))
        if order in self._turns and self._turns[order][1] and not event.get("turn_is_formatted"):
            return  # an unformatted repeat of an ended turn
        self._turns[order] = (text or self._turns.get(order, ("", False))[0], ended or self._turns.get(order, ("", False))[1])
        if self._on_partial is not None and not self._terminating:
            whole = self._text()
            if whole:
                self._on_partial(Transcript(whole, is_final=False, provider=self.name))

    def _text(self) -> str:
        return " ".join(text for _, (text, _ended) in sorted(self._turns.items()) if text)

    async def _send_frame(self, frame: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        loop = asyncio.get_running_loop()
        seconds = len(frame) / 2 / self._rate
        ahead = self._sent_s + seconds - (loop.time() - self._started) - BACKLOG_LEAD_S
        if ahead > 0:
            await asyncio.sleep(ahead)  # never more than the lead ahead of real time
        try:
            async with asyncio.timeout(self.provider.timeout_s):
                await self._ws.send(frame)
        except TimeoutError:
            raise ProviderTimeout(f"streaming socket took no audio for {self.provider.timeout_s:g} s",
                                  provider=self.name) from None
        except ConnectionClosed:
            await asyncio.wait([self._reader], timeout=1.0)
            raise self._error or TransientProviderError("streaming socket closed while sending",
                                                        provider=self.name) from None
        self._sent_s += seconds

    async def send(self, pcm: bytes) -> None:
        if self._error is not None:
            raise self._error
        if len(pcm) % 2:
            raise RequestError("PCM16 audio must have an even number of bytes", provider=self.name)
        self._pending += pcm
        while len(self._pending) >= self._frame:
            frame, self._pending = self._pending[: self._frame], self._pending[self._frame :]
            await self._send_frame(frame)

    async def finish(self) -> Transcript:
        """The rest of the audio (padded to one 50 ms frame), ForceEndpoint, Terminate; read to Termination."""
        from websockets.exceptions import ConnectionClosed

        if self._error is not None:
            raise self._error
        if self._pending:
            await self._send_frame(self._pending + b"\0" * (self._frame - len(self._pending)))
            self._pending = b""
        self._terminating = True
        with contextlib.suppress(ConnectionClosed):  # the reader says why it closed
            await self._ws.send(json.dumps({"type": "ForceEndpoint"}))
            await self._ws.send(json.dumps({"type": "Terminate"}))
        try:
            async with asyncio.timeout(self.provider.timeout_s):
                await self._done.wait()
        except TimeoutError:
            raise ProviderTimeout(f"no Termination {self.provider.timeout_s:g} s after Terminate",
                                  provider=self.name) from None
        if self._error is not None:
            raise self._error
        return Transcript(self._text(), is_final=True, provider=self.name)

    async def aclose(self) -> None:
        await reap(self._reader)
        close_socket(self._ws)
