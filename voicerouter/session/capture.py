"""The audio of the turn being spoken and the turn detector's decision that ends it.

Shared by the intake (which fills a capture frame by frame) and the turn runners (which stream it
to an STT or S2S provider and answer it), so neither needs to know the other's internals.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

CANCEL_GRACE_S = 2.0  # how long a cancelled worker may take to stop before the session moves on


@dataclass
class Capture:
    """The audio of the turn being spoken, and the streaming work fed from it.

    `buffer` keeps the whole utterance (VAD pre-roll included) until its transcript is final, so a
    failed streaming STT can be replaced by a batch transcription of all of it (no lost words).
    """

    index: int
    start_s: float
    buffer: bytearray = field(default_factory=bytearray)
    # Frames for the worker; a future asks it to catch up (see `catch_up`); None ends the utterance.
    queue: asyncio.Queue[bytes | asyncio.Future[None] | None] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[Any] | None = None  # streams frames to the STT stream or S2S session
    last_partial: str = ""
    flushable: bool = False  # the STT stream has `flush()`: its partials follow the audio, not the clock
    # Audio goes to the worker in pieces of at least this many bytes (0: every frame as it comes).
    # A live call sends 40 ms pieces: half the socket messages of 20 ms frames, for 20 ms of delay.
    piece_bytes: int = 0
    _unsent: bytearray = field(default_factory=bytearray, repr=False)

    def feed(self, pcm: bytes) -> None:
        self.buffer += pcm
        if self.worker is None:
            return
        if not self.piece_bytes:
            self.queue.put_nowait(pcm)
            return
        self._unsent += pcm
        if len(self._unsent) >= self.piece_bytes:
            self._send_unsent()

    def _send_unsent(self) -> None:
        if self._unsent and self.worker is not None:
            self.queue.put_nowait(bytes(self._unsent))
            self._unsent.clear()

    async def catch_up(self) -> None:
        """Wait until the worker has handled every frame fed so far (and flushed its stream)."""
        if self.worker is None or self.worker.done():
            return
        self._send_unsent()
        marker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(marker)
        await asyncio.wait([marker, self.worker], return_when=asyncio.FIRST_COMPLETED)

    async def close_worker(self) -> None:
        """Tell the worker the utterance is complete and wait for it to finish; its errors are
        the caller's to inspect (`worker.exception()`); a cancelled worker raises CancelledError."""
        if self.worker is None:
            return
        self._send_unsent()
        self.queue.put_nowait(None)
        await asyncio.wait([self.worker])
        if self.worker.cancelled():
            raise asyncio.CancelledError

    async def cancel_worker(self) -> None:
        """Stop the worker (the turn was dropped or the session ends) and wait until it has stopped,
        at most CANCEL_GRACE_S: a worker that swallowed its cancellation must not stall the session."""
        if self.worker is not None and not self.worker.done():
            self.worker.cancel()
            await asyncio.wait([self.worker], timeout=CANCEL_GRACE_S)


@dataclass
class TurnEnd:
    """The turn detector's decision, in the session's own terms."""

    reason: str
    start_s: float
    end_s: float
    delay_ms: float
    t: float  # session clock (wall) when the turn ended
    audio_t: float = 0.0  # the session's audio clock when the turn ended
