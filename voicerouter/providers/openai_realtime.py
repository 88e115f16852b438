"""OpenAI Realtime speech-to-speech over WebSocket (GA protocol; beta event names also understood).

voicerouter decides turns locally, so server VAD is off: each turn's audio is appended, committed,
and a response is requested explicitly. Every failure (handshake status, `error` event, failed
response, dropped socket, silence) becomes a typed error naming the provider instance.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidHandshake, InvalidStatus

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
from voicerouter.providers.base import PIPELINE_RATE, AudioChunk, BuildContext, Conversation, Kind, S2SEvent
from voicerouter.providers.openai import DEFAULT_BASE_URL, error_message, resolve_key
from voicerouter.providers.s2s_socket import S2SSocketProvider, S2SSocketSession

RATE = 24000  # the only PCM rate the Realtime API takes and gives
DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "marin"
DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
DEFAULT_TIMEOUT_S = 30.0

AUDIO_DELTA = frozenset({"response.output_audio.delta", "response.audio.delta"})
TEXT_DELTA = frozenset({"response.output_audio_transcript.delta", "response.audio_transcript.delta",
                        "response.output_text.delta", "response.text.delta"})
USER_TRANSCRIPT = "conversation.item.input_audio_transcription.completed"
USER_TRANSCRIPT_FAILED = "conversation.item.input_audio_transcription.failed"
# A reply cut off mid-way (the previous connection broke) goes on from the last word the caller heard.
CONTINUE_NOTE = ("Your previous reply was cut off mid-way by a connection problem. The user heard it up to "
                 "where your last message ends. Continue that reply from exactly there, without repeating "
                 "anything already said and without mentioning the interruption.")


def error_from_event(error: dict[str, Any], *, provider: str) -> ProviderError:
    """An `error` event's (or failed response's) `{type, code, message}` -> typed error."""
    kind = str(error.get("type") or "")
    code = str(error.get("code") or "")
    message = redact(str(error.get("message") or code or kind or "unknown error"))
    text = f"{message} ({code or kind})" if (code or kind) and (code or kind) not in message else message
    if code in ("invalid_api_key", "authentication_error") or kind in ("authentication_error", "permission_error"):
        return AuthError(text, provider=provider, hint="check the API key and its permissions")
    if code == "rate_limit_exceeded" or kind in ("rate_limit_error", "rate_limit_exceeded"):
        return RateLimitedError(text, provider=provider)
    if code == "session_expired":
        return TransientProviderError(text, provider=provider)  # a new connection fixes it
    if kind == "invalid_request_error" or code in ("invalid_value", "invalid_event", "missing_required_parameter"):
        return RequestError(text, provider=provider)
    return TransientProviderError(text, provider=provider)


def history_items(history: Conversation) -> list[dict[str, Any]]:
    """The conversation so far as Realtime message items (assistant turns as output text)."""
    items = []
    for message in history.messages:
        part = "output_text" if message.role == "assistant" else "input_text"
        items.append({"type": "message", "role": message.role, "content": [{"type": part, "text": message.text}]})
    return items


class OpenAIRealtime(S2SSocketProvider["RealtimeSession"]):
    """The S2S provider: one WebSocket per session (`connect`), one config per instance."""

    kind: Kind = "s2s"

    def __init__(self, name: str, config: ProviderConfig, *, base_url: str, api_key: str) -> None:
        self.name = name
        self.type = "openai-realtime"
        self.config = config
        self.model = config.model or DEFAULT_MODEL
        self.url = http.ws_url(http.check_base_url(base_url, provider=name)) + "/realtime"
        self.timeout_s = config.timeout_ms / 1000 if config.timeout_ms else DEFAULT_TIMEOUT_S
        self._api_key = api_key
        self.beta = bool(config.options.get("beta", False))

    def session_config(self, instructions: str | None) -> dict[str, Any]:
        transcription = {"model": self.config.options.get("transcription_model", DEFAULT_TRANSCRIPTION_MODEL)}
        if self.config.language:
            transcription["language"] = self.config.language.split("-")[0].lower()
        voice = self.config.voice or DEFAULT_VOICE
        if self.beta:
            session: dict[str, Any] = {
                "modalities": ["text", "audio"], "voice": voice, "input_audio_format": "pcm16",
                "output_audio_format": "pcm16", "input_audio_transcription": transcription, "turn_detection": None,
            }
        else:
            fmt = {"type": "audio/pcm", "rate": RATE}
            session = {
                "type": "realtime",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {"format": fmt, "transcription": transcription, "turn_detection": None},
                    "output": {"format": fmt, "voice": voice},
                },
            }
        if instructions:
            session["instructions"] = instructions
        return session

    async def _open(self) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self._api_key}"}
        if self.beta:
            headers["OpenAI-Beta"] = "realtime=v1"
        url = f"{self.url}?model={quote(self.model, safe='')}"
        try:
            return await websockets.connect(
                url, additional_headers=headers, open_timeout=min(10.0, self.timeout_s), max_size=None,
                user_agent_header="voicerouter",
            )
        except InvalidStatus as exc:
            response = exc.response
            message = None
            with contextlib.suppress(Exception):
                message = error_message(response.body or b"")
            raise http.error_for_status(
                response.status_code, redact(message) if message else http.snippet(response.body or b""),
                provider=self.name, headers=response.headers,
            ) from None
        except TimeoutError:
            raise ProviderTimeout(f"WebSocket handshake timed out after {min(10.0, self.timeout_s):g} s",
                                  provider=self.name) from None
        except (OSError, InvalidHandshake) as exc:
            raise http.transport_error(exc, provider=self.name) from None

    def _session(self, ws: ClientConnection, instructions: str | None) -> RealtimeSession:
        return RealtimeSession(self, ws, instructions)

    async def _start(self, session: RealtimeSession, instructions: str | None, history: Conversation) -> None:
        await session.start(self.session_config(instructions), history_items(history))

    def __repr__(self) -> str:
        return f"<OpenAIRealtime {self.name} {self.model} {self.url}>"


class RealtimeSession(S2SSocketSession):
    """One live conversation. A reader task drains the socket so keepalive pongs are never stuck."""

    message_kind = "event"

    def __init__(self, provider: OpenAIRealtime, ws: ClientConnection, instructions: str | None = None) -> None:
        super().__init__(provider, ws)
        self.instructions = instructions
        self.beta = provider.beta
        self._resampler: StreamResampler | None = None
        self._appended = 0  # bytes of 24 kHz audio since the last commit
        self._abandoned = False  # a response the caller stopped reading (barge-in) may still be streaming
        self._stale_items: set[str] = set()  # user items whose transcript came after their reply ended
        # the last reply's assistant item, the audio of it received, whether it completed
        self._reply_item: str | None = None
        self._reply_audio_s = 0.0
        self._reply_complete = False
        self._acknowledge: str | None = None  # the answer a truncate (or delete) awaits, read before the next response

    def _check(self, message: dict[str, Any]) -> None:
        if not isinstance(message.get("type"), str):
            raise ValueError("no event type")

    def _close_error(self, code: int | None, reason: str, *, dropped: bool) -> ProviderError:
        if dropped:
            return TransientProviderError(f"WebSocket dropped (code {code})", provider=self.name)
        return TransientProviderError(f"WebSocket closed by the server (code {code})", provider=self.name)

    def _raise_error_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "error":
            raise error_from_event(event.get("error") or {}, provider=self.name)

    async def start(self, session: dict[str, Any], items: list[dict[str, Any]]) -> None:
        created = await self._next()
        self._raise_error_event(created)
        if created["type"] != "session.created":
            raise http.malformed(f"expected session.created, got {created['type']}", "", provider=self.name)
        await self._send({"type": "session.update", "session": session})
        while True:
            event = await self._next()
            self._raise_error_event(event)
            if event["type"] == "session.updated":
                break
        for item in items:
            await self._send({"type": "conversation.item.create", "item": item})

    async def send_audio(self, pcm: bytes, sample_rate: int = PIPELINE_RATE) -> None:
        if self._resampler is None or self._resampler.src_rate != sample_rate:
            self._resampler = StreamResampler(sample_rate, RATE)
        await self._append(self._resampler.process(pcm))

    async def _append(self, pcm: bytes) -> None:
        if pcm:
            self._appended += len(pcm)
            await self._send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})

    async def respond(self, *, resume_after: str = "") -> AsyncIterator[S2SEvent]:
        """Commit the turn's audio and stream the reply.

        `resume_after`: the start of this reply the user already heard (from a connection that broke
        mid-reply). It is added after the user's turn as the assistant's cut-off message (what
        `conversation.item.truncate` leaves of an interrupted reply), and this response's
        instructions ask the model to continue it without repeating it.
        """
        await self._settle()
        if self._resampler is not None:
            await self._append(self._resampler.flush())
        committed = self._appended > 0
        if committed:
            await self._send({"type": "input_audio_buffer.commit"})
            self._appended = 0
        request: dict[str, Any] = {"type": "response.create"}
        if resume_after.strip():
            part = "text" if self.beta else "output_text"
            await self._send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "assistant", "status": "incomplete",
                "content": [{"type": part, "text": resume_after.strip()}]}})
            note = f"{self.instructions}\n\n{CONTINUE_NOTE}" if self.instructions else CONTINUE_NOTE
            request["response"] = {"instructions": note}
        await self._send(request)
        finished = False
        try:
            async for event in self._events_of_response(committed):
                yield event
            finished = True
        finally:
            if not finished:
                await self._abandon()

    async def _events_of_response(self, committed: bool) -> AsyncIterator[S2SEvent]:
        """The reply is complete at `response.done`. The user's transcript is asynchronous: it is
        yielded when it comes before (or queued with) `response.done`, and otherwise stays unknown;
        one that lands later is recognised by its item id and never taken for the next turn's."""
        reply: list[str] = []
        user_item: str | None = None
        heard = not committed  # no audio, no transcript to wait for
        self._reply_item, self._reply_audio_s, self._reply_complete = None, 0.0, False
        while True:
            event = await self._next()
            kind = event["type"]
            self._raise_error_event(event)
            if kind == "input_audio_buffer.committed":
                user_item = event.get("item_id")
            elif self._user_transcript(event, user_item):
                heard = True
                yield S2SEvent("user_transcript", text=str(event.get("transcript", "")).strip())
            elif kind == USER_TRANSCRIPT_FAILED:
                heard = True  # the reply still comes; only the user's words are unknown
            elif kind in TEXT_DELTA:
                delta = str(event.get("delta", ""))
                reply.append(delta)
                yield S2SEvent("reply_text", text=delta)
            elif kind in AUDIO_DELTA:
                try:
                    pcm = base64.b64decode(event.get("delta", ""), validate=True)
                except ValueError:
                    raise http.malformed("audio delta is not base64", str(event.get("delta", "")),
                                         provider=self.name) from None
                if event.get("item_id"):
                    self._reply_item = str(event["item_id"])
                self._reply_audio_s += len(pcm) / 2 / RATE
                yield S2SEvent("audio", audio=AudioChunk(pcm, RATE))
            elif kind == "response.done":
                response = event.get("response") or {}
                if response.get("status") == "failed":
                    details = response.get("status_details") or {}
                    raise error_from_event(details.get("error") or {"message": "response failed"},
                                           provider=self.name)
                self._reply_complete = True
                break
        if not heard:
            text = self._queued_transcript(user_item)
            if text is not None:
                yield S2SEvent("user_transcript", text=text)
            elif user_item is not None:
                self._stale_items.add(user_item)
        yield S2SEvent("done", text="".join(reply))

    def _user_transcript(self, event: dict[str, Any], user_item: str | None) -> bool:
        """Whether `event` is this turn's input transcription (not a late one of an earlier turn)."""
        if event["type"] != USER_TRANSCRIPT:
            return False
        item = event.get("item_id")
        if item in self._stale_items:
            self._stale_items.discard(item)
            return False
        return user_item is None or item == user_item

    def _queued_transcript(self, user_item: str | None) -> str | None:
        """The turn's transcript if it already arrived behind `response.done`; nothing is awaited."""
        while not self._events.empty():
            item = self._events.get_nowait()
            if isinstance(item, ProviderError):
                self._events.put_nowait(item)  # the next turn reports the dead socket
                return None
            if self._user_transcript(item, user_item):
                return str(item.get("transcript", "")).strip()
            if item["type"] == USER_TRANSCRIPT_FAILED:
                return None
            self._pushback.append(item)  # the next response's business
        return None

    async def _abandon(self) -> None:
        """The caller stopped reading mid-response (barge-in or an error): cancel it on the server."""
        if self._closed or self._reader.done():
            return
        self._abandoned = True
        with contextlib.suppress(ProviderError):
            await self._send({"type": "response.cancel"})

    async def truncate(self, heard_s: float) -> None:
        """A barge-in: the user heard the last reply's audio only up to `heard_s` seconds, so the
        server's copy of it is cut there (`conversation.item.truncate`; the server then drops the
        item's transcript, leaving the model the audio that was played), or deleted when none of it
        was played (the API refuses to truncate at 0 ms). Its answer is read before the next response."""
        item, received_ms = self._reply_item, int(self._reply_audio_s * 1000)
        if item is None or self._closed or self._reader.done():
            return
        end_ms = max(0, min(int(heard_s * 1000), received_ms))  # more than the item holds is an error
        if self._reply_complete and end_ms >= received_ms:
            return  # heard whole
        self._reply_item = None  # once per reply
        if end_ms == 0:
            await self._send({"type": "conversation.item.delete", "item_id": item})
            self._acknowledge = "conversation.item.deleted"
        else:
            await self._send({"type": "conversation.item.truncate", "item_id": item, "content_index": 0,
                              "audio_end_ms": end_ms})
            self._acknowledge = "conversation.item.truncated"

    async def _settle(self) -> None:
        """Before a new response: skip what is left of an abandoned one, up to its response.done,
        and read the answer to a truncate (in either order; an error there costs the next reply
        nothing). Anything else read after the abandoned response is kept for the new one."""
        abandoned, awaited = self._abandoned, self._acknowledge
        self._abandoned, self._acknowledge = False, None
        if abandoned:
            self._pushback.clear()
        kept: list[dict[str, Any]] = []
        with contextlib.suppress(ProviderTimeout):
            while abandoned or awaited:
                event = await self._next(2.0)
                kind = event["type"]
                if abandoned and (kind == "response.done" or (
                        kind == "error" and (event.get("error") or {}).get("code") == "response_cancel_not_active")):
                    abandoned = False
                elif awaited and kind in (awaited, "error"):
                    awaited = None
                elif not abandoned:
                    kept.append(event)
        self._pushback[:0] = kept


def create(name: str, kind: Kind | None, config: ProviderConfig, ctx: BuildContext) -> OpenAIRealtime:
    """Factory for type `openai-realtime` (registry signature)."""
    if kind not in (None, "s2s"):
        raise ConfigError(f"provider {name}: type openai-realtime is speech-to-speech only", hint="set kind: s2s")
    base_url = config.base_url or DEFAULT_BASE_URL
    http.check_base_url(base_url, provider=name)
    api_key = resolve_key(name, config, ctx, required=True)
    assert api_key is not None
    return OpenAIRealtime(name, config, base_url=base_url, api_key=api_key)
