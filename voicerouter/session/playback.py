"""Speaking a reply: one reply at a time goes to the sink, as its own task so a barge-in can cut
just that, and each reply reports its first-audio latency and how much of it was played.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from voicerouter.audio.sink import AudioSink
from voicerouter.errors import ProviderError
from voicerouter.providers.base import AudioChunk
from voicerouter.session.capture import CANCEL_GRACE_S, TurnEnd
from voicerouter.session.events import EventType
from voicerouter.session.results import TurnResult

if TYPE_CHECKING:
    from voicerouter.session.session import Session


class ReplyPlayer:
    """Owns the reply being spoken: at most one at a time, cancellable by a barge-in.

    A cancelled reply (a barge-in, or its turn cancelled) is waited for at most CANCEL_GRACE_S: a
    provider client that swallows the cancellation must not hold up the turns after it. `on_stuck`
    is told about such a reply and how long it waited (the session reports it); the reply is left behind.
    """

    def __init__(self, sink: AudioSink, on_stuck: Callable[[TurnResult, float], None] | None = None) -> None:
        self.sink = sink
        self.on_stuck = on_stuck
        self._current: tuple[asyncio.Task[None], TurnResult] | None = None
        self._cut: asyncio.Event | None = None  # set by interrupt() for the reply in progress

    @property
    def speaking(self) -> bool:
        return self._current is not None and not self._current[0].done()

    def interrupt(self) -> TurnResult | None:
        """Barge-in: drop the audio queued in the sink and cancel the reply; returns its turn."""
        if not self.speaking:
            return None
        task, turn = self._current  # type: ignore[misc]
        self.sink.clear()
        task.cancel()
        if self._cut is not None:
            self._cut.set()
        turn.interrupted = True
        return turn

    async def play(self, turn: TurnResult, work: Coroutine[Any, Any, None]) -> ProviderError | None:
        """Run `work` (which writes the reply to the sink) as the reply of `turn`.

        Returns the provider error that ended it, if any; a barge-in is no error (the turn is
        marked interrupted). Other errors (a bug, a broken sink) are raised.
        """
        task = asyncio.create_task(work)
        cut = self._cut = asyncio.Event()
        self._current = (task, turn)
        cut_waiter = asyncio.create_task(cut.wait())
        try:
            await asyncio.wait([task, cut_waiter], return_when=asyncio.FIRST_COMPLETED)
            if not task.done():  # a barge-in cancelled it: it should end at once
                await asyncio.wait([task], timeout=CANCEL_GRACE_S)
        finally:
            cut_waiter.cancel()
            if self._current is not None and self._current[0] is task:
                self._current = None
            if not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=CANCEL_GRACE_S)
            if not task.done():
                turn.interrupted = True
                if self.on_stuck is not None:
                    self.on_stuck(turn, CANCEL_GRACE_S)
        if not task.done() or task.cancelled():
            turn.interrupted = True
            return None
        exc = task.exception()
        if isinstance(exc, ProviderError):
            return exc
        if exc is not None:
            raise exc
        return None


class Playback:
    """Writes one reply's audio to the sink and reports first audio and the amount played."""

    def __init__(self, session: Session, turn: TurnResult, end: TurnEnd) -> None:
        self.session = session
        self.turn = turn
        self.end = end
        self.seconds = 0.0
        self.start_audio_s: float | None = None
        self._played_at_start = session.sink.played_s

    async def write(self, chunk: AudioChunk) -> None:
        if not chunk.pcm:
            return
        s = self.session
        if self.start_audio_s is None:
            self.start_audio_s = s.audio_t
            # On the audio clock (repeatable: in a fast replay, providers answer in no audio time)
            # and on the wall clock (what the providers really took).
            audio_first = (s.audio_t - self.end.audio_t) * 1000
            self.turn.latency_ms["tts_first_audio"] = audio_first
            self.turn.latency_ms["voice_to_voice"] = self.end.delay_ms + audio_first
            first = (s.bus.now() - self.end.t) * 1000
            self.turn.wall_latency_ms["tts_first_audio"] = first
            self.turn.wall_latency_ms["voice_to_voice"] = self.end.delay_ms + first
            stage = "s2s" if s.plan.pipeline == "s2s" else "tts"
            s.bus.emit(
                EventType.TTS_FIRST_AUDIO,
                turn=self.turn.index,
                provider=s.last_provider.get(stage),
                latency_ms=round(first, 1),
            )
        await s.sink.write(chunk)
        self.seconds += chunk.duration_s

    def played_s(self) -> float:
        """How much of this reply the sink has really played so far."""
        return min(self.seconds, max(0.0, self.session.sink.played_s - self._played_at_start))

    def done(self) -> None:
        self.turn.reply_audio_s = self.seconds
        played = max(0.0, self.session.sink.played_s - self._played_at_start)
        self.session.bus.emit(
            EventType.TTS_DONE,
            turn=self.turn.index,
            provider=self.turn.tts_provider,
            audio_s_out=round(self.seconds, 3),
            audio_s_played=round(min(played, self.seconds), 3),
            start_audio_s=None if self.start_audio_s is None else round(self.start_audio_s, 3),
            interrupted=self.turn.interrupted,
        )
