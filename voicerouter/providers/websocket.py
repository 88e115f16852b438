"""What the WebSocket provider clients share: opening a socket with typed errors, and the shell of a
TTS that takes text as it streams in (Cartesia contexts, ElevenLabs stream-input, Deepgram speak).

A streaming TTS synthesizes one sentence with `synthesize(text)` (so failover chains and the
session use it like any TTS) and a stream of text pieces with `synthesize_stream(pieces)`, sending
each piece as it arrives so the vendor starts speaking before the text is complete. A caller that
stops reading (barge-in) cancels the generation on the vendor's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from voicerouter.config.secrets import redact
from voicerouter.errors import ProviderError, ProviderTimeout, TransientProviderError
from voicerouter.providers import http
from voicerouter.providers.base import AudioChunk
from voicerouter.providers.closing import close_later, reap

SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s*$")
CLAUSE_END = re.compile(r"[.!?,;:][\"')\]]*\s*$")


def flush_rule(name: str, options: Mapping[str, Any]) -> re.Pattern[str]:
    """`options.flush`: speak streamed text at each `sentence` end (the default, best prosody) or at each
    `clause` end (a comma is enough: speech starts sooner, with more seams)."""
    from voicerouter.errors import ConfigError

    value = str(options.get("flush", "sentence"))
    if value not in ("sentence", "clause"):
        raise ConfigError(f"provider {name}: options.flush must be sentence or clause, not {value!r}")
    return SENTENCE_END if value == "sentence" else CLAUSE_END


async def open_socket(url: str, headers: Mapping[str, str], *, provider: str, timeout_s: float,
                      message_of: Callable[[bytes], str | None] | None = None) -> Any:
    """Connect, mapping a refused upgrade to the HTTP status's typed error, a slow one to a timeout."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    try:
        return await connect(url, additional_headers=dict(headers), user_agent_header="voicerouter",
                             open_timeout=timeout_s, max_size=2**24, ping_interval=None)
    except InvalidStatus as exc:
        response = exc.response
        body = bytes(response.body or b"")
        message = None
        if message_of is not None:
            with contextlib.suppress(Exception):
                message = message_of(body)
        raise http.error_for_status(response.status_code, redact(message) if message else http.snippet(body),
                                    provider=provider, headers=response.headers) from None
    except TimeoutError:
        raise ProviderTimeout(f"WebSocket not open after {timeout_s:g} s", provider=provider) from None
    except (InvalidHandshake, OSError) as exc:
        raise TransientProviderError(f"WebSocket failed to open: {type(exc).__name__}: {redact(str(exc))}",
                                     provider=provider) from None


def dropped(exc: Exception, *, provider: str, what: str = "WebSocket dropped") -> TransientProviderError:
    """A closed or broken socket as a transient error naming the close code."""
    rcvd = getattr(exc, "rcvd", None)
    code = rcvd.code if rcvd is not None else 1006
    reason = f": {redact(rcvd.reason)}" if rcvd is not None and rcvd.reason else ""
    return TransientProviderError(f"{what} (code {code}{reason})", provider=provider)


async def single(text: str) -> AsyncIterator[str]:
    yield text


class Generation:
    """One synthesis on a socket. The vendor's reader puts `AudioChunk`s, then None (the end) or a
    `ProviderError`, on `queue`; `send` and `end` put text on the wire; `close` releases the socket,
    cancelling the generation on the vendor's side when `cancelled`."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[AudioChunk | ProviderError | None] = asyncio.Queue()

    async def send(self, text: str) -> None:
        raise NotImplementedError

    async def end(self) -> None:
        raise NotImplementedError

    async def close(self, *, cancelled: bool) -> None:
        raise NotImplementedError


class SocketTTS:
    """The shell of a streaming-text TTS: a sender task feeds text while audio is yielded as it comes."""

    name: str

    async def _start(self) -> Generation:
        raise NotImplementedError

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """One sentence over the socket, audio as it arrives."""
        async with contextlib.aclosing(self.synthesize_stream(single(text))) as chunks:
            async for chunk in chunks:
                yield chunk

    async def synthesize_stream(self, pieces: AsyncIterator[str]) -> AsyncIterator[AudioChunk]:
        """Text pieces sent as they arrive (agent tokens); audio yielded as the vendor produces it."""
        generation = await self._start()
        sender = asyncio.create_task(self._pump(generation, pieces))
        finished = False
        try:
            while True:
                item = await generation.queue.get()
                if item is None:
                    break
                if isinstance(item, ProviderError):
                    raise item.with_context(provider=self.name)
                yield item
            finished = True
        finally:
            sender.cancel()
            await reap(sender)
            await generation.close(cancelled=not finished)

    async def _pump(self, generation: Generation, pieces: AsyncIterator[str]) -> None:
        try:
            async for piece in pieces:
                if piece:
                    await generation.send(piece)
            await generation.end()
        except ProviderError as exc:
            generation.queue.put_nowait(exc)
        except Exception as exc:  # the caller's text source failed: the generation cannot finish
            generation.queue.put_nowait(TransientProviderError(
                f"text stream failed: {type(exc).__name__}: {redact(str(exc))}", provider=self.name))


async def send_json(ws: Any, event: Mapping[str, Any], *, provider: str) -> None:
    """One JSON text frame; a closed socket is a transient error."""
    import json

    from websockets.exceptions import ConnectionClosed

    try:
        await ws.send(json.dumps(event))
    except ConnectionClosed as exc:
        raise dropped(exc, provider=provider, what="WebSocket dropped while sending") from None


def close_socket(ws: Any) -> None:
    """Close in the background (the close handshake is off the caller's path)."""
    if ws is not None:
        close_later(ws.close())
