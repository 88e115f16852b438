"""The speech-to-speech turn: the utterance is streamed to one S2S connection as it is spoken,
committed when the turn ends, and the reply's audio and texts are played and recorded. A chain
that restarts a reply mid-way resumes it at the first word the caller has not heard, text and audio
alike (`resilience.s2s`), so the reply is recorded once; a failed turn reconnects (with the history)
next time.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from voicerouter.errors import ProviderError
from voicerouter.providers.base import PIPELINE_RATE, S2SProvider, S2SSession, truncate_heard
from voicerouter.session.capture import Capture, TurnEnd
from voicerouter.session.events import EventType
from voicerouter.session.playback import Playback
from voicerouter.session.results import TurnResult

if TYPE_CHECKING:
    from voicerouter.session.session import Session


class S2STurns:
    """Answers a session's turns with its S2S provider (a failover chain), over one connection."""

    def __init__(self, session: Session, s2s: S2SProvider) -> None:
        self.session = session
        self.s2s = s2s
        self._connection: S2SSession | None = None
        self._lock = asyncio.Lock()
        self._idle = asyncio.Event()  # no reply is streaming
        self._idle.set()

    def start_worker(self, capture: Capture) -> None:
        capture.worker = asyncio.create_task(self._send(capture))

    async def catch_up(self, capture: Capture) -> None:
        """Nothing to wait for: an S2S connection sends no partials that steer turn ends."""

    async def aclose(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(ProviderError):
                await self._connection.aclose()

    async def _connect(self) -> S2SSession:
        async with self._lock:  # the next turn's sender and a reply may both need a connection
            if self._connection is None:
                s = self.session
                self._connection = await self.s2s.connect(instructions=s.plan.instructions, history=s.conversation)
            return self._connection

    async def _send(self, capture: Capture) -> None:
        while (pcm := await capture.queue.get()) is not None:
            if isinstance(pcm, asyncio.Future):  # a catch-up request: nothing to flush here
                pcm.set_result(None)
                continue
            # Audio of the next turn waits while a reply streams (a barge-in ends the reply), so
            # it is committed with its own turn, never with the one being answered.
            await self._idle.wait()
            connection = await self._connect()
            await connection.send_audio(pcm, PIPELINE_RATE)

    async def run(self, capture: Capture, end: TurnEnd, turn: TurnResult, previous: asyncio.Task[Any] | None) -> bool:
        """Answer one turn; False when every S2S provider failed."""
        s = self.session
        try:
            if capture.worker is not None:
                await capture.close_worker()
                if capture.worker.exception() is not None:
                    raise capture.worker.exception()  # type: ignore[misc]
        except ProviderError as exc:
            self._connection = None  # reconnect (with the history) on the next turn
            s.stage_failed("s2s", exc, turn)
            return False
        if previous is not None:
            await asyncio.wait([previous])
        ok = await s.respond(turn, self._respond(turn, end))
        if not ok:
            self._connection = None
        return ok

    async def _respond(self, turn: TurnResult, end: TurnEnd) -> None:
        s = self.session
        connection = await self._connect()
        reply: list[str] = []
        starts: list[float] = []  # where each piece of the reply's text starts in its audio
        played = Playback(s, turn, end)
        s.bus.emit(EventType.TTS_START, turn=turn.index, text="")
        self._idle.clear()
        try:
            async with contextlib.aclosing(connection.respond()) as events:
                async for event in events:
                    if event.type == "user_transcript":
                        self._user_text(turn, end, event.text)
                    elif event.type == "reply_text":
                        reply.append(event.text)
                        starts.append(played.seconds)  # the chain passes words on just before their audio
                    elif event.type == "audio" and event.audio is not None:
                        await played.write(event.audio)
                    # "done" is the last event; the iterator ends by itself (breaking out early
                    # would look like a cut reply to the provider).
            await s.sink.drain()
        finally:
            self._idle.set()
            turn.tts_provider = turn.stt_provider = s.last_provider.get("s2s")
            if turn.transcript is None:
                turn.transcript = ""
            text = "".join(reply).strip()
            if text:
                turn.reply = text
                # A barge-in cut the reply: the conversation keeps the words the caller heard, not
                # the ones still queued to play (and the provider is told, below, where possible).
                said = _heard(reply, starts, played) if turn.interrupted else text
                if said:
                    s.conversation.add("assistant", said)
                s.bus.emit(EventType.AGENT_REPLY, turn=turn.index, provider=turn.tts_provider, text=text,
                           **({"heard": said} if said != text else {}))
            played.done()
            if turn.interrupted:  # the provider's own conversation keeps what was played, too
                with contextlib.suppress(ProviderError):
                    await truncate_heard(connection, played.played_s())

    def _user_text(self, turn: TurnResult, end: TurnEnd, text: str) -> None:
        s = self.session
        again = turn.transcript is not None  # a fallback provider transcribed the resent turn
        turn.transcript = text.strip()
        turn.wall_latency_ms.setdefault("stt_final", (s.bus.now() - end.t) * 1000)
        messages = s.conversation.messages
        if again and messages and messages[-1].role == "user":
            messages[-1].text = turn.transcript
        else:
            s.conversation.add("user", turn.transcript)
        s.bus.emit(
            EventType.FINAL_TRANSCRIPT,
            turn=turn.index,
            provider=s.last_provider.get("s2s"),
            text=turn.transcript,
            latency_ms=round(turn.wall_latency_ms["stt_final"], 1),
        )


def _heard(pieces: list[str], starts: list[float], played: Playback) -> str:
    """The reply's text whose audio the caller heard: each piece's audio ends where the next starts."""
    heard_s = played.played_s() + 0.02  # a word whose last 20 ms were not played counts as heard
    ends = starts[1:] + [played.seconds]
    return "".join(p for p, e in zip(pieces, ends, strict=True) if e <= heard_s).strip()
