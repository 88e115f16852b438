"""A speech-to-speech chain that is itself an `S2SProvider`; failover keeps the conversation.

The chain session buffers the audio of the current user turn. If the live connection fails
(while sending, before the first reply event, or mid-reply), the next provider gets a new
connection with the conversation as it stood before the turn (each vendor replays it in its own
format: Realtime items, Live `clientContent` turns) and the user's turn audio is sent again, so the
reply answers what was just said and the user's words reach it once.

A reply cut mid-stream (a stall or drop caught by the deadlines, then a retry on the same provider
or a failover to another vendor) resumes at the first word the caller has not heard: the reply's
audio and text are passed on only up to the end of the last complete word (`resume.ReplyAttempt`),
the next attempt is told the words heard (`respond(resume_after=...)`: Realtime gets them as the
assistant's cut-off message and is asked to continue) and, if it starts over anyway, the words it
repeats are skipped. The `failover`/`retry` event says `restarted_reply: true`, `words_heard` and
`heard_s`. Nothing is heard twice, no word is lost or cut.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from voicerouter.errors import ProviderError, ProviderTimeout
from voicerouter.providers.base import (
    PIPELINE_RATE,
    AudioChunk,
    Conversation,
    S2SEvent,
    respond_resuming,
    truncate_heard,
)
from voicerouter.providers.closing import discard, wait_closed
from voicerouter.resilience.chain import ChainProvider, Member, StageRunner, stream_of
from voicerouter.resilience.resume import ReplyAttempt, ReplyProgress, SpeakingRate
from voicerouter.resilience.retry import as_provider_error

REPLAY_SECONDS_PER_AUDIO_SECOND = 0.25


class S2SChain(ChainProvider):
    kind = "s2s"

    async def connect(self, *, instructions: str | None, history: Conversation) -> ChainS2SSession:
        session = ChainS2SSession(self.runner, instructions, history, ProviderRates(self.runner.members))
        await session.start()
        return session


class ProviderRates(SpeakingRate):
    """Each provider's speaking rate, kept in its process-wide state: what one session's completed
    replies taught serves the first reply of the next session too."""

    def __init__(self, members: list[Member]) -> None:
        super().__init__()
        self.states = {m.name: m.state for m in members}

    def _refresh(self) -> None:  # other sessions may have learned since
        self.by_provider.update({name: state.seconds_per_char for name, state in self.states.items()
                                 if state.seconds_per_char is not None})

    def get(self, provider: str) -> float:
        self._refresh()
        return super().get(provider)

    def knows(self, provider: str) -> bool:
        self._refresh()
        return super().knows(provider)

    def observe(self, provider: str, text: str, audio_s: float) -> None:
        self._refresh()
        super().observe(provider, text, audio_s)
        if provider in self.by_provider and provider in self.states:
            self.states[provider].seconds_per_char = self.by_provider[provider]


class ChainS2SSession:
    def __init__(self, runner: StageRunner, instructions: str | None, history: Conversation,
                 rates: SpeakingRate | None = None) -> None:
        self.runner = runner
        self.rates = rates or ProviderRates(runner.members)
        self.instructions = instructions
        self.history = history
        self.turn_audio: list[tuple[bytes, int]] = []
        self.live: Member | None = None
        self.live_admitted: float | None = None  # the live member's breaker clock when its connection was let through
        self.session: Any = None
        self.failed: tuple[Member, ProviderError, bool] | None = None
        self._closing: list[asyncio.Task[None] | None] = []  # abandoned connections closing in the background
        # the last reply's final attempt: its connection, what the caller heard before it (earlier
        # attempts), and the attempt (how much of its audio was dropped as repeated words)
        self._last_reply: tuple[Any, float, ReplyAttempt] | None = None

    async def _connect(self, member: Member, history: Conversation | None = None) -> Any:
        return await member.provider.connect(instructions=self.instructions, history=history or self.history)

    async def start(self) -> None:
        """Connect to the first provider that accepts (the connect itself fails over)."""

        async def op(member: Member, attempt: int) -> AsyncIterator[Any]:
            yield await self._connect(member)

        async for session in self.runner.run(op):
            self.live, self.session = self.runner.last_used, session
            self.live_admitted = self.runner.last_admitted_at

    async def send_audio(self, pcm: bytes, sample_rate: int = PIPELINE_RATE) -> None:
        self.turn_audio.append((pcm, sample_rate))
        if self.session is None:
            return
        try:
            async with asyncio.timeout(self.runner.settings.stall_timeout_s):
                await self.session.send_audio(pcm, sample_rate)
        except Exception as exc:
            member = self.live
            assert member is not None
            error = ProviderTimeout("send stalled") if isinstance(exc, TimeoutError) else as_provider_error(exc, member.name)
            error = self.runner._context(error, member)
            self.runner._failed(member, error, self.live_admitted)
            self.failed = (member, error, False)
            self._close_live()  # respond() reconnects and replays the turn's audio

    def _discard(self, session: Any) -> None:
        # in the background: a dead server's close handshake must not delay the fallback's answer
        self._closing = [t for t in self._closing if t is not None and not t.done()]
        self._closing.append(discard(session))

    def _close_live(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            self._discard(session)

    def respond(self) -> AsyncIterator[S2SEvent]:
        return self._respond()

    async def _respond(self) -> AsyncIterator[S2SEvent]:
        live, live_session = self.live, self.session
        # respond() commits what was sent so far; audio arriving from now on is the next turn's
        turn_audio, self.turn_audio = self.turn_audio, []
        audio_s = sum(len(pcm) / 2 / rate for pcm, rate in turn_audio)
        # The conversation as it stood before this turn: the user's words of this turn reach a
        # fallback as the resent audio, never also as history text (the live provider may already
        # have transcribed them into the shared history).
        settled = Conversation(list(self.history.messages))
        created: dict[str, Any] = {}
        answering: list[Member] = []  # the member whose reply is being streamed
        progress = ReplyProgress()
        attempts: list[tuple[Any, float, ReplyAttempt]] = []
        self._last_reply = None

        async def op(member: Member, attempt: int) -> AsyncIterator[S2SEvent]:
            if member is live and attempt == 1 and live_session is not None:
                session = live_session
            else:
                session = await self._connect(member, settled)
                old = created.pop(member.name, None)
                if old is not None:
                    self._discard(old)
                created[member.name] = session
                for pcm, rate in turn_audio:
                    await session.send_audio(pcm, rate)
            if any(earlier is session for earlier, _, _ in attempts):
                # a restart on the connection that carried the cut attempt (a stall): its cut reply,
                # unheard beyond the words told below as text, leaves the provider's conversation
                await truncate_heard(session, 0.0)
            before_s = progress.heard_s
            reply = progress.begin(member.name, self.rates.get(member.name), rate_known=self.rates.knows(member.name))
            attempts.append((session, before_s, reply))
            completed = False
            try:
                async with contextlib.aclosing(stream_of(respond_resuming(session, progress.heard))) as events:
                    async for event in events:
                        if not answering or answering[-1] is not member:
                            answering.append(member)
                        for out in _held_back(reply, event):
                            yield out
                completed = True
                self.rates.observe(member.name, reply.part, reply.received_s)
            finally:
                if not completed:
                    progress.broke()

        def resumed() -> dict[str, Any]:
            return {"words_heard": progress.words_heard, "heard_s": round(progress.heard_s, 3)}

        def first_timeout(member: Member, attempt: int) -> float:
            base = self.runner.settings.first_result_timeout_s
            if member is live and attempt == 1 and live_session is not None:
                return base
            return base + REPLAY_SECONDS_PER_AUDIO_SECOND * audio_s

        queue = [m for m in self.runner.order() if m is not live]
        if live is not None and live_session is not None:
            queue.insert(0, live)
        elif live is not None and self.runner.settings.retries > 0:
            queue.append(live)  # its connection broke while the user spoke: a new one is its retry
        failed = True
        try:
            async for event in self.runner.run(
                op, first_timeout_s=first_timeout, restart_key="restarted_reply", queue=queue,
                previous=self.failed, preclaimed=live if live_session is not None else None,
                preclaimed_at=self.live_admitted, restart_detail=resumed,
            ):
                yield event
            failed = False
        except (GeneratorExit, asyncio.CancelledError):
            failed = False  # the caller stopped listening (barge-in): not the provider's fault
            raise
        finally:
            self.failed = None
            winner = answering[-1] if answering else None
            keep = created.pop(winner.name, None) if winner is not None and not failed else None
            for session in created.values():
                self._discard(session)
            if keep is not None:
                if live_session is not None:
                    self._discard(live_session)
                self.live, self.session = winner, keep
                self.live_admitted = self.runner.last_admitted_at
            elif failed:
                self._close_live()
            if not failed and attempts and attempts[-1][0] is self.session:
                self._last_reply = attempts[-1]

    async def truncate(self, heard_s: float) -> None:
        """A barge-in: the caller heard the first `heard_s` seconds of the last reply as played. The
        live connection is told the matching point of its own audio: what earlier attempts played
        comes first, and audio the final attempt repeated (dropped, never played) counts in its own."""
        last, self._last_reply = self._last_reply, None
        if last is None or last[0] is not self.session:
            return
        session, before_s, attempt = last
        dropped_s = attempt.passed_s - attempt.passed_out_s
        if heard_s < before_s + attempt.passed_out_s or not attempt.done:
            with contextlib.suppress(ProviderError, TimeoutError):
                async with asyncio.timeout(self.runner.settings.stall_timeout_s):
                    await truncate_heard(session, dropped_s + max(0.0, heard_s - before_s))

    async def aclose(self) -> None:
        self._close_live()
        await wait_closed(self._closing)



def _held_back(reply: ReplyAttempt, event: S2SEvent) -> list[S2SEvent]:
    """What of `event` goes on now: text and audio up to the last complete word (see `resume`).

    An event that releases nothing still yields an empty audio event, which tells the runner's
    stall watchdog that the provider is streaming while a word is held back.
    """
    if event.type == "reply_text":
        text, audio = reply.feed_text(event.text)
    elif event.type == "audio" and event.audio is not None:
        text, audio = reply.feed_audio(event.audio)
    elif event.type == "done":
        text, audio = reply.finish()
        return [*_events(text, audio), S2SEvent("done", text=reply.before + reply.said)]
    else:
        return [event]
    return _events(text, audio) or [S2SEvent("audio", audio=AudioChunk(b"", reply.rate or PIPELINE_RATE))]


def _events(text: str, audio: list[AudioChunk]) -> list[S2SEvent]:
    out = [S2SEvent("reply_text", text=text)] if text else []
    return out + [S2SEvent("audio", audio=chunk) for chunk in audio if chunk.pcm]
