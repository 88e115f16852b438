"""The seam between a call's wire protocol and the session core.

A transport (Twilio, Telnyx, the generic WebSocket) only converts: it decodes the far end's
messages into `Inbound` items (call started, audio, a mark echoed back, a key pressed, hung up)
and encodes what the session plays (audio, marks, a barge-in `clear`) into the far end's
messages. It never holds turn logic, failover or events.

`CallSource` and `CallSink` are the session's audio source and sink for any such transport:
the source turns pushed wire audio into 16 kHz frames paced by the far end (real time), and the
sink sends reply audio at the wire rate, follows it with marks, and learns what was really
played when the far end echoes them back (like Twilio's `mark`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from voicerouter.audio.convert import StreamResampler
from voicerouter.providers.base import PIPELINE_RATE, AudioChunk

WireMessage = str | bytes  # one WebSocket message: text (JSON) or binary


@dataclass(frozen=True)
class Started:
    """The far end opened the stream: who the call is, and the routing context it carries."""

    call_id: str
    stream_id: str
    params: dict[str, str] = field(default_factory=dict)
    sample_rate: int = 8000


@dataclass(frozen=True)
class Audio:
    pcm: bytes  # signed 16-bit little-endian mono at `sample_rate`
    sample_rate: int


@dataclass(frozen=True)
class MarkEcho:
    name: str


@dataclass(frozen=True)
class Digit:
    digit: str


@dataclass(frozen=True)
class Stopped:
    reason: str = "hangup"


Inbound = Started | Audio | MarkEcho | Digit | Stopped


class Transport(Protocol):
    """A far end's wire protocol: its messages in, the session's output out."""

    name: str
    wire_rate: int  # sample rate of the audio the far end expects back

    def decode(self, message: WireMessage) -> list[Inbound]:
        """What one WebSocket message means (may be nothing, or several items after reordering)."""
        ...

    def encode_audio(self, pcm: bytes) -> WireMessage:
        """One piece of reply audio (PCM16 at `wire_rate`, whole 20 ms frames, up to 1 s)."""
        ...

    def encode_mark(self, name: str) -> WireMessage: ...

    def encode_clear(self) -> WireMessage: ...


class CallSource:
    """The caller's audio as an `AudioSource`: pushed at any rate, read as 16 kHz frames.

    Frames come as the far end sends them (real time), so the session must not run in lockstep.
    `lag_s` is how long the frame just read waited in the queue: the server's own lateness.
    """

    sample_rate = PIPELINE_RATE
    realtime = True

    def __init__(self, frame_ms: int = 20, name: str = "call", *, on_lag: Callable[[float], None] | None = None):
        self.frame_ms = frame_ms
        self.name = name
        # Frames waiting for the session, and the session's wait for one (a deque and a future: this
        # runs for every 20 ms frame of every live call, where asyncio.Queue's bookkeeping showed).
        self._queue: deque[tuple[bytes, float] | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._resampler: StreamResampler | None = None
        self._pending = bytearray()
        self._frame_bytes = PIPELINE_RATE * frame_ms // 1000 * 2
        self._ended = False
        self.on_lag = on_lag
        self.max_lag_s = 0.0
        self.received_s = 0.0

    def push(self, pcm: bytes, sample_rate: int) -> None:
        if self._ended:
            return
        if self._resampler is None or self._resampler.src_rate != sample_rate:
            self._resampler = StreamResampler(sample_rate, PIPELINE_RATE)
        self.received_s += len(pcm) / 2 / sample_rate
        audio = self._resampler.process(pcm)
        now = time.monotonic()
        size = self._frame_bytes
        if not self._pending and len(audio) == size:  # the usual case: one wire frame, one session frame
            self._put((audio, now))
            return
        self._pending += audio
        while len(self._pending) >= size:
            self._put((bytes(self._pending[:size]), now))
            del self._pending[:size]

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._put(None)

    def _put(self, item: tuple[bytes, float] | None) -> None:
        self._queue.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def frames(self) -> AsyncIterator[bytes]:
        while True:
            while not self._queue:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            item = self._queue.popleft()
            if item is None:
                return
            frame, arrived = item
            lag = time.monotonic() - arrived
            self.max_lag_s = max(self.max_lag_s, lag)
            if self.on_lag is not None:
                self.on_lag(lag)
            yield frame


class CallSink:
    """Reply audio out through a transport, as an `AudioSink` that knows what was really played.

    `write()` converts to the wire rate and queues whole 20 ms frames followed by a mark; the far end
    plays them in real time and echoes each mark when playback reaches it, which advances
    `played_s`. Once the far end holds `ahead_s` of audio not yet played, further audio is held back
    and sent in one message when its buffer runs down to that (a timer sees to it): a TTS vendor
    that streams 20 ms pieces ten times faster than real time costs a few messages per second of
    reply, not fifty media messages and fifty marks, on both ends of the wire, and the far end
    still has `ahead_s` to play should this process stall. `drain()` waits for the last mark's echo
    (bounded by the audio's length plus `grace_s`, in case the far end never answers); `clear()` drops what is queued here and tells
    the far end to drop its buffer (barge-in). After `hangup()` nothing is sent and nothing waited for.
    """

    def __init__(self, transport: Transport, send: Callable[[WireMessage], None], *, frame_ms: int = 20,
                 grace_s: float = 2.0, purge: Callable[[], None] | None = None, ahead_s: float = 0.4) -> None:
        self.transport = transport
        self.ahead_s = ahead_s  # audio queued at the far end beyond which more is held back and batched
        self._timer: asyncio.TimerHandle | None = None
        self._send = send
        self._purge = purge  # drops messages queued for sending but not yet sent
        self.frame_ms = frame_ms
        self.grace_s = grace_s
        self.rate = transport.wire_rate
        self._resampler: StreamResampler | None = None
        self._carry = bytearray()
        self._marks: dict[str, float] = {}  # mark name -> position (s) it stands for
        self._next_mark = 0
        self.sent_s = 0.0  # reply audio handed to the far end
        self.played_s = 0.0  # reply audio the far end confirmed as played
        self.clears = 0
        self._played_changed = asyncio.Event()
        self._closed = False
        self._play_deadline = 0.0  # monotonic time by which everything sent should have played

    # -- AudioSink ------------------------------------------------------------------------------

    async def write(self, chunk: AudioChunk) -> None:
        if self._closed or not chunk.pcm:
            return
        if self._resampler is None or self._resampler.src_rate != chunk.sample_rate:
            self._flush_resampler()
            self._resampler = StreamResampler(chunk.sample_rate, self.rate)
        self._carry += self._resampler.process(chunk.pcm)
        ahead = self._play_deadline - time.monotonic()
        if ahead <= self.ahead_s or len(self._carry) >= self.rate * 2:
            self._send_now()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(ahead - self.ahead_s, self._send_now)

    async def drain(self) -> None:
        self._flush_resampler()
        self._send_now(final=True)
        while not self._closed and self.played_s < self.sent_s - 1e-6:
            timeout = max(0.05, self._play_deadline + self.grace_s - time.monotonic())
            self._played_changed.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._played_changed.wait()
            except TimeoutError:
                return  # the far end stopped confirming playback; do not hold the session forever

    def clear(self) -> None:
        self.clears += 1
        self._cancel_timer()
        self._resampler = None
        self._carry.clear()
        if not self._closed:
            if self._purge is not None:
                self._purge()
            self._send(self.transport.encode_clear())
        # What was sent but not confirmed will never play: playback stops where it is.
        self.sent_s = self.played_s
        self._marks.clear()
        self._play_deadline = time.monotonic()
        self._played_changed.set()

    async def aclose(self) -> None:
        self.hangup()

    # -- from the far end -----------------------------------------------------------------------

    def confirm(self, name: str) -> None:
        """The far end echoed mark `name`: everything before it has been played."""
        position = self._marks.pop(name, None)
        if position is None:
            return  # an echo after clear(), or a mark that is not ours
        for older in [n for n, p in self._marks.items() if p <= position]:
            del self._marks[older]
        self.played_s = max(self.played_s, position)
        self._played_changed.set()

    def hangup(self) -> None:
        self._closed = True
        self._cancel_timer()
        self._played_changed.set()

    # -- internals ------------------------------------------------------------------------------

    def _send_now(self, final: bool = False) -> None:
        """Send the whole frames held (all of them when `final`), then a mark."""
        self._cancel_timer()
        if self._closed:
            return
        self._send_frames(final=final)
        self._mark()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush_resampler(self) -> None:
        if self._resampler is not None:
            self._carry += self._resampler.flush()
            self._resampler = None

    def _send_frames(self, *, final: bool) -> None:
        # Whole 20 ms frames go out as soon as they exist, as few messages as possible (up to 1 s
        # each): a TTS chunk of 300 ms is one message, not fifteen.
        size = self.rate * self.frame_ms // 1000 * 2
        largest = self.rate * 2
        while len(self._carry) >= size or (final and self._carry):
            take = min(largest, len(self._carry) if final else len(self._carry) // size * size)
            piece = bytes(self._carry[:take])
            del self._carry[:take]
            self._send(self.transport.encode_audio(piece))
            seconds = len(piece) / 2 / self.rate
            now = time.monotonic()
            self._play_deadline = max(self._play_deadline, now) + seconds
            self.sent_s += seconds

    def _mark(self) -> None:
        if self._closed or self.sent_s <= self.played_s + 1e-9 or self.sent_s in self._marks.values():
            return
        self._next_mark += 1
        name = f"vr-{self._next_mark}"
        self._marks[name] = self.sent_s
        self._send(self.transport.encode_mark(name))
