"""The shell both speech-to-speech WebSocket clients share (OpenAI Realtime, Gemini Live).

A provider's `connect` opens a socket, starts a session on it (its setup and the conversation so
far) and closes the socket again when the start fails; its readiness probe is a connect. A session's
reader task drains the socket into a queue, so keepalive pongs are never stuck behind a slow
consumer, and once the socket is gone every read fails with the same typed error. What differs stays
with each vendor: the handshake, the setup, the conversation's format, what a close frame means.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Generic, TypeVar

from voicerouter.errors import ProviderError, ProviderTimeout
from voicerouter.providers import http
from voicerouter.providers.base import Conversation
from voicerouter.providers.closing import reap
from voicerouter.providers.websocket import close_socket, send_json

SessionT = TypeVar("SessionT", bound="S2SSocketSession")


class S2SSocketProvider(Generic[SessionT]):
    """`connect` and `probe` for a vendor that implements `_open`, `_session` and `_start`."""

    name: str
    timeout_s: float

    async def _open(self) -> Any:
        """The vendor's handshake: an open WebSocket, or a typed error."""
        raise NotImplementedError

    def _session(self, ws: Any, instructions: str | None) -> SessionT:
        raise NotImplementedError

    async def _start(self, session: SessionT, instructions: str | None, history: Conversation) -> None:
        """Send the session's setup and the conversation so far, and wait until they are accepted."""
        raise NotImplementedError

    async def connect(self, *, instructions: str | None = None, history: Conversation | None = None) -> SessionT:
        session = self._session(await self._open(), instructions)
        try:
            await self._start(session, instructions, history or Conversation())
        except BaseException:
            await session.aclose()
            raise
        return session

    async def probe(self) -> None:
        """Handshake plus setup: proves the key, the model and the session config are accepted."""
        session = await self.connect(instructions=None, history=Conversation())
        await session.aclose()

    async def aclose(self) -> None:
        return None


class S2SSocketSession:
    """One live conversation on a socket: server messages are read by `_next`, sent by `_send`.

    A vendor names what it calls a message (`message_kind`), may demand more of one (`_check`), and
    says what a close means (`_close_error`: `dropped` when the connection broke without a close
    frame of the server's).
    """

    message_kind = "message"

    def __init__(self, provider: S2SSocketProvider[Any], ws: Any) -> None:
        self.provider = provider
        self.name = provider.name
        self._ws = ws
        self._events: asyncio.Queue[dict[str, Any] | ProviderError] = asyncio.Queue()
        self._pushback: list[dict[str, Any]] = []  # messages read ahead that belong to the next turn
        self._closed = False
        self._dead: ProviderError | None = None  # set when the socket is gone
        self._reader = asyncio.create_task(self._read(), name=f"s2s-reader-{provider.name}")

    def _check(self, message: dict[str, Any]) -> None:
        """Raise ValueError when a JSON object is not a message of this protocol."""

    def _close_error(self, code: int | None, reason: str, *, dropped: bool) -> ProviderError:
        raise NotImplementedError

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for frame in self._ws:
                try:
                    message = json.loads(frame)
                    if not isinstance(message, dict):
                        raise ValueError("not an object")
                    self._check(message)
                except ValueError:
                    raw = frame if isinstance(frame, str) else frame[:200].hex()
                    await self._events.put(http.malformed(f"{self.message_kind} is not a JSON object", raw,
                                                          provider=self.name))
                    continue
                await self._events.put(message)
            self._dead = self._close_error(self._ws.close_code, self._ws.close_reason or "", dropped=False)
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            self._dead = self._close_error(rcvd.code if rcvd else 1006, rcvd.reason if rcvd else "", dropped=True)
        except Exception as exc:  # anything else that kills the socket ends the session the same way
            self._dead = http.transport_error(exc, provider=self.name)
        await self._events.put(self._dead)

    async def _next(self, timeout_s: float | None = None) -> dict[str, Any]:
        if self._pushback:
            return self._pushback.pop(0)
        timeout_s = self.provider.timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                item = await self._events.get()
        except TimeoutError:
            raise ProviderTimeout(f"no {self.message_kind} from the server for {timeout_s:g} s",
                                  provider=self.name) from None
        if isinstance(item, ProviderError):
            if item is self._dead:
                self._events.put_nowait(item)  # the socket is gone: every later read fails the same way
            raise item
        return item

    async def _send(self, message: dict[str, Any]) -> None:
        await send_json(self._ws, message, provider=self.name)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await reap(self._reader)
        close_socket(self._ws)  # the close handshake never delays the caller (e.g. a failover)
