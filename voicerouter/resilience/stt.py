"""An STT chain that is itself an `STTProvider`, and a stream that never loses an utterance's words.

The chain's stream keeps every byte of the current utterance. While audio flows it is forwarded to
one live provider stream; if that stream breaks, the next streaming provider gets a new stream and
the whole buffer again. At `finish()` the live stream's final transcript must arrive within the
first-result deadline; otherwise the next provider is given the whole buffer (streamed again, or
as one batch request) so the fallback transcript covers everything that was said. A final later
than half the deadline is hedged: the next provider gets the buffer at once and the first final wins.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

from voicerouter.errors import ProviderError, ProviderTimeout
from voicerouter.providers.base import PIPELINE_RATE, AudioChunk, PartialCallback, STTStream, Transcript
from voicerouter.providers.closing import discard
from voicerouter.resilience.chain import ChainProvider, Member, StageRunner, last_item, runs_locally
from voicerouter.resilience.retry import as_provider_error
from voicerouter.session.events import EventType

# A batch (or replayed) request must also process the audio: allow this many seconds per audio second
# on top of the first-result deadline.
REPLAY_SECONDS_PER_AUDIO_SECOND = 0.25
REPLAY_PIECE_S = 0.5  # audio per frame when the buffered utterance is sent again to a fallback
# A live stream's final transcript is due soon after the audio ends (the audio was transcribed as it
# came): when it is later than this share of the first-result deadline, the fallback is given the
# buffered utterance too and the first final wins (the live stream still has its whole deadline).
FINAL_HEDGE_SHARE = 0.5


def _tag(transcript: Transcript, name: str) -> Transcript:
    return transcript if transcript.provider else dataclasses.replace(transcript, provider=name)


class STTChain(ChainProvider):
    kind = "stt"

    def __init__(self, runner: StageRunner) -> None:
        super().__init__(runner)
        self.supports_streaming = any(getattr(m.provider, "supports_streaming", False) for m in runner.members)

    def _replay_timeout(self, audio_s: float) -> float:
        return self.runner.settings.first_result_timeout_s + REPLAY_SECONDS_PER_AUDIO_SECOND * audio_s

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        async def op(member: Member, attempt: int) -> AsyncIterator[Transcript]:
            yield _tag(await member.provider.transcribe(audio), member.name)

        result = await last_item(self.runner.run(op, first_timeout_s=self._replay_timeout(audio.duration_s)))
        if result is None:
            return Transcript("", is_final=True)
        return result

    async def open_stream(
        self, sample_rate: int = PIPELINE_RATE, on_partial: PartialCallback | None = None
    ) -> ChainSTTStream:
        stream = ChainSTTStream(self, sample_rate, on_partial)
        await stream.start()
        return stream


class ChainSTTStream:
    """One utterance: buffered, forwarded live, replayed to a fallback when the live stream fails."""

    def __init__(self, chain: STTChain, sample_rate: int, on_partial: PartialCallback | None) -> None:
        self.chain = chain
        self.runner = chain.runner
        self.sample_rate = sample_rate
        self.on_partial = on_partial
        self.buffer: list[bytes] = []
        self.queue: list[Member] = []  # members not tried yet, in order
        self.errors: list[ProviderError] = []
        self.failed: tuple[Member, ProviderError, bool] | None = None  # last live failure not yet reported
        self.broken: list[Member] = []  # reachable members whose live stream failed; finish() may retry them
        self.live: Member | None = None
        self._live_admitted: float | None = None  # the live member's breaker clock when it was let through
        self._live_stream = None
        self._generation = 0  # partials from a replaced stream are ignored

    def _replay_pieces(self) -> list[bytes]:
        """The buffered utterance in pieces of up to REPLAY_PIECE_S: a replay is a few large frames,
        not one small frame per 20 ms of speech (the fallback's answer comes sooner)."""
        audio = b"".join(self.buffer)
        size = max(2, int(REPLAY_PIECE_S * self.sample_rate) * 2)
        return [audio[i:i + size] for i in range(0, len(audio), size)]

    @property
    def audio_s(self) -> float:
        return sum(len(b) for b in self.buffer) / 2 / self.sample_rate

    def _partial_for(self, generation: int, name: str):
        def forward(transcript: Transcript) -> None:
            if generation == self._generation and self.on_partial is not None:
                self.on_partial(_tag(transcript, name))

        return forward

    async def start(self) -> None:
        self.queue = self.runner.order()
        await self._open_next(asyncio.get_running_loop().time())

    async def _open_next(self, since: float) -> None:
        """Open a live stream on the next usable member, if it streams, and replay the buffer into it.

        The table's order wins over streaming: when the next usable member only transcribes in
        batch, no live stream is opened and `finish()` sends it the whole utterance. `since` is when
        the caller started waiting (open_stream or send): a failover's `elapsed_ms` counts from there,
        across every provider tried, not from the last one's start.
        """
        loop = asyncio.get_running_loop()
        while self.queue:
            member = self.queue[0]
            if not getattr(member.provider, "supports_streaming", False):
                if self.runner.blocked(member):
                    self.queue.pop(0)  # skipped without a request; finish() reports why if all fail
                    self.errors.append(self.runner._skip_error(member))
                    continue
                return
            self.queue.pop(0)
            why = self.runner._usable(member, last=not self.queue)
            if why is not None:
                self.errors.append(why)
                continue
            admitted = member.state.breaker.now()
            self._generation += 1
            try:
                async with asyncio.timeout(self.runner.settings.first_result_timeout_s):
                    stream = await member.provider.open_stream(
                        self.sample_rate, on_partial=self._partial_for(self._generation, member.name)
                    )
                try:
                    async with asyncio.timeout(self.chain._replay_timeout(self.audio_s)):
                        for pcm in self._replay_pieces():
                            await stream.send(pcm)
                except BaseException:
                    discard(stream)
                    raise
            except Exception as exc:
                self._live_failed(member, exc, "open", admitted)
                continue
            self._report_switch(member, loop.time() - since)
            self.live, self._live_stream, self._live_admitted = member, stream, admitted
            return

    def _report_switch(self, member: Member, elapsed_s: float) -> None:
        if self.failed is None:
            return
        failed, error, mid = self.failed
        self.runner.bus.emit(
            EventType.FAILOVER, provider=failed.name, turn=self.runner.turn(), stage="stt",
            from_provider=failed.name, to_provider=member.name, reason=error.reason, error=error.message,
            elapsed_ms=round(elapsed_s * 1000, 1), replayed_audio_s=round(self.audio_s, 3), restarted=mid,
        )
        self.failed = None

    def _live_failed(self, member: Member, exc: BaseException, during: str, admitted: float | None) -> None:
        if isinstance(exc, TimeoutError):
            error: ProviderError = ProviderTimeout(f"no answer during {during}")
        else:
            error = as_provider_error(exc, member.name)
        error = self.runner._context(error, member)
        self.runner._failed(member, error, admitted)
        self.errors.append(error)
        self.failed = (member, error, during == "send")
        if during == "open" and error.status is None:
            # its connect never got an answer (refused, timed out, no route): a replay at finish
            # would only wait for it again, so it is not retried within this utterance
            return
        if member not in self.broken:
            self.broken.append(member)

    async def send(self, pcm: bytes) -> None:
        self.buffer.append(pcm)
        stream = self._live_stream
        if stream is None:
            return
        since = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self.runner.settings.stall_timeout_s):
                await stream.send(pcm)
        except Exception as exc:
            await self._live_broke(stream, exc, since)

    @property
    def flush(self) -> Callable[[], Awaitable[None]] | None:
        """`STTStream.flush` when the live stream has one (partials then follow the audio), else None."""
        if getattr(self._live_stream, "flush", None) is None:
            return None
        return self._flush

    async def _flush(self) -> None:
        stream = self._live_stream
        flush = getattr(stream, "flush", None)
        if flush is None:
            return
        since = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self.runner.settings.stall_timeout_s):
                await flush()
        except TimeoutError:
            # A flush waits for computation, not for an answer: an engine this far behind is slow
            # (a busy machine), not down. Stop waiting (its partials come late this once) and let
            # the final transcript's deadline judge it.
            self.runner.bus.emit(
                EventType.WARNING, provider=self.live.name if self.live else None, turn=self.runner.turn(),
                stage="stt", message=f"partials not ready within {self.runner.settings.stall_timeout_s:g} s; "
                "turn detection goes on without them",
            )
        except Exception as exc:  # the live stream broke: fail over as a failed send would
            await self._live_broke(stream, exc, since)
            await self._flush()

    async def _live_broke(self, stream: STTStream, exc: Exception, since: float) -> None:
        """The live stream failed while taking audio: drop it and fail over to the next member."""
        member, admitted = self.live, self._live_admitted
        assert member is not None
        self._drop_live()
        discard(stream)
        self._live_failed(member, exc, "send", admitted)
        await self._open_next(since)

    def _drop_live(self) -> None:
        self.live, self._live_stream = None, None
        self._generation += 1

    async def finish(self) -> Transcript:
        live, live_stream, admitted = self.live, self._live_stream, self._live_admitted
        audio = AudioChunk(b"".join(self.buffer), self.sample_rate)
        errors_before = len(self.errors)

        async def op(member: Member, attempt: int) -> AsyncIterator[Transcript]:
            if member is live and attempt == 1 and live_stream is not None:
                yield _tag(await live_stream.finish(), member.name)
                return
            provider = member.provider
            if getattr(provider, "supports_streaming", False):
                stream = await provider.open_stream(self.sample_rate, on_partial=None)
                try:
                    for pcm in self._replay_pieces():
                        await stream.send(pcm)
                    final = await stream.finish()
                finally:
                    discard(stream)
                yield _tag(final, member.name)
            else:
                yield _tag(await provider.transcribe(audio), member.name)

        def first_timeout(member: Member, attempt: int) -> float:
            if member is live and attempt == 1 and live_stream is not None:
                return self.runner.settings.first_result_timeout_s
            return self.chain._replay_timeout(self.audio_s)

        def hedge_final(member: Member) -> float | None:
            # not for an engine on this machine: its late final means a busy CPU, not a hung stream
            if member is live and live_stream is not None and not runs_locally(member.provider):
                return FINAL_HEDGE_SHARE * self.runner.settings.first_result_timeout_s
            return None

        # the live stream first, then members not tried yet, then those whose stream broke earlier in
        # the utterance (a replay is their retry; an open breaker or unhealthy mark still skips them)
        queue = ([live] if live is not None else []) + self.queue
        queue += [m for m in self.broken if m not in queue and self.runner.settings.retries > 0]
        try:
            result = await last_item(self.runner.run(
                op, first_timeout_s=first_timeout, queue=queue, errors=self.errors,
                previous=self.failed, preclaimed=live, preclaimed_at=admitted, hedge_after_s=hedge_final,
            ))
            if live is not None and live_stream is not None and result is not None and result.provider != live.name \
                    and not any(e.provider == live.name for e in self.errors[errors_before:]):
                # the fallback's final won the hedge while the live one never came: for the breaker
                # (and latency outlier ejection) that is a late answer, else a hung provider would be
                # raced on every turn and never skipped
                late = FINAL_HEDGE_SHARE * self.runner.settings.first_result_timeout_s
                self.runner._failed(live, self.runner._context(
                    ProviderTimeout(f"no final transcript within {late * 1000:.0f} ms (lost the hedge)"), live),
                    admitted)
        finally:
            self._drop_live()
            if live_stream is not None:
                discard(live_stream)
        return result if result is not None else Transcript("", is_final=True)

    async def aclose(self) -> None:
        stream, member = self._live_stream, self.live
        self._drop_live()
        if stream is not None:
            if member is not None:  # the utterance was abandoned (too short): neither success nor failure
                member.state.breaker.abandon(self._live_admitted)
            discard(stream)

