"""The STT -> agent -> TTS turn: streaming the utterance to the STT while it is spoken, the final
transcript (with a batch fallback over the buffered utterance), the agent's reply in turn order,
and the reply spoken sentence by sentence. When the agent chain streams (an LLM writing token by
token), each sentence is spoken as soon as it is complete, while the rest is still being written;
`agent_reply` then follows the reply's first audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from voicerouter.config.secrets import redact
from voicerouter.errors import AllProvidersFailed, ProviderError
from voicerouter.providers.base import (
    PIPELINE_RATE,
    Agent,
    AudioChunk,
    PartialCallback,
    STTProvider,
    Transcript,
    TTSProvider,
)
from voicerouter.session.capture import Capture, TurnEnd
from voicerouter.session.events import EventType
from voicerouter.session.playback import Playback
from voicerouter.session.results import TurnResult
from voicerouter.session.sentences import split_sentences

if TYPE_CHECKING:
    from voicerouter.session.session import Session


class PipelineTurns:
    """Answers a session's turns with its STT, agent and TTS (each a failover chain)."""

    def __init__(self, session: Session, stt: STTProvider, tts: TTSProvider, agent: Agent) -> None:
        self.session = session
        self.stt = stt
        self.tts = tts
        self.agent = agent

    def start_worker(self, capture: Capture) -> None:
        """Stream the turn to the STT as it is spoken, when the STT can stream."""
        if getattr(self.stt, "supports_streaming", False):
            capture.worker = asyncio.create_task(self._stream(capture))

    async def catch_up(self, capture: Capture) -> None:
        """Send the STT stream every frame fed so far and wait for its partials (`STTStream.flush`)."""
        await capture.catch_up()

    async def run(self, capture: Capture, end: TurnEnd, turn: TurnResult, previous: asyncio.Task[Any] | None) -> bool:
        """Answer one turn; False when a stage failed entirely."""
        s = self.session
        transcript = await self._final_transcript(capture, end, turn)
        if transcript is None:
            return False
        if not transcript.strip():
            # Speech without words (noise, a cough the VAD let through) is not a turn of the result.
            s.bus.emit(EventType.WARNING, turn=turn.index, message="no words recognised; turn ignored", stage="stt")
            s.forget_turn(turn)
            return True
        return await self.answer(transcript, end, turn, previous)

    async def answer(self, transcript: str, end: TurnEnd, turn: TurnResult, previous: asyncio.Task[Any] | None,
                     *, input: str = "speech") -> bool:
        """The agent's reply to what the user said (or typed on the keypad), spoken; False when a stage failed."""
        s = self.session
        if previous is not None:
            await asyncio.wait([previous])  # answer turns in order
        s.conversation.add("user", transcript, input=input)
        if getattr(self.agent, "streams", False):
            return await self._answer_streaming(transcript, end, turn)
        started = s.bus.now()
        try:
            reply = await self.agent.reply(transcript, s.conversation, s.info)
        except ProviderError as exc:
            s.stage_failed("agent", exc, turn)
            return False
        turn.wall_latency_ms["agent"] = (s.bus.now() - started) * 1000
        turn.reply = reply
        s.conversation.add("assistant", reply)
        s.bus.emit(
            EventType.AGENT_REPLY,
            turn=turn.index,
            provider=getattr(self.agent, "last_used", None) or getattr(self.agent, "name", None),
            text=reply,
            latency_ms=round(turn.wall_latency_ms["agent"], 1),
        )
        if not reply.strip():
            return True
        return await s.respond(turn, self._speak(turn, end, reply))

    async def _final_transcript(self, capture: Capture, end: TurnEnd, turn: TurnResult) -> str | None:
        s = self.session
        result: Transcript | None = None
        try:
            if capture.worker is not None:
                await capture.close_worker()
                exc = capture.worker.exception()
                if isinstance(exc, AllProvidersFailed):
                    # the chain's stream already gave every provider the whole utterance (replayed
                    # or in one batch request): another pass would only circle back to the same
                    # failed providers, some maybe never reachable, on a fresh deadline
                    raise exc
                if isinstance(exc, ProviderError):
                    # No lost words: the whole utterance is still buffered, transcribe it in one go.
                    s.bus.emit(
                        EventType.WARNING,
                        turn=turn.index,
                        message=f"streaming STT failed, transcribing the buffered utterance: {redact(str(exc))}",
                        stage="stt",
                        error_type=type(exc).__name__,
                    )
                elif exc is not None:
                    raise exc
                else:
                    result = capture.worker.result()
            if result is None:
                result = await self.stt.transcribe(AudioChunk(bytes(capture.buffer), PIPELINE_RATE))
        except ProviderError as exc:
            s.stage_failed("stt", exc, turn)
            return None
        turn.wall_latency_ms["stt_final"] = (s.bus.now() - end.t) * 1000
        turn.transcript = result.text.strip()
        turn.stt_provider = result.provider or s.last_provider.get("stt")
        s.bus.emit(
            EventType.FINAL_TRANSCRIPT,
            turn=turn.index,
            provider=turn.stt_provider,
            text=turn.transcript,
            latency_ms=round(turn.wall_latency_ms["stt_final"], 1),
        )
        return turn.transcript

    async def _stream(self, capture: Capture) -> Transcript:
        stream = await self.stt.open_stream(PIPELINE_RATE, on_partial=self._partial_callback(capture))
        capture.flushable = getattr(stream, "flush", None) is not None
        try:
            while (item := await capture.queue.get()) is not None:
                if isinstance(item, asyncio.Future):
                    # Catch up: every partial for the audio sent so far is delivered before the
                    # turn detector decides on the next frame (fast sessions only ask for this).
                    flush = getattr(stream, "flush", None)
                    capture.flushable = flush is not None
                    if flush is not None:
                        await flush()
                    if not item.done():
                        item.set_result(None)
                    continue
                await stream.send(item)
            return await stream.finish()
        finally:
            with contextlib.suppress(ProviderError):
                await stream.aclose()

    def _partial_callback(self, capture: Capture) -> PartialCallback:
        s = self.session
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        def on_partial(transcript: Transcript) -> None:
            # Engines may report from their own thread; the bus and detector live on the loop.
            if threading.get_ident() != loop_thread:
                if not loop.is_closed():  # a partial racing the end of the session is moot
                    loop.call_soon_threadsafe(s.on_partial, capture, transcript)
            else:
                s.on_partial(capture, transcript)

        return on_partial

    async def _speak(self, turn: TurnResult, end: TurnEnd, reply: str) -> None:
        sentences = split_sentences(reply)
        self.session.bus.emit(EventType.TTS_START, turn=turn.index, text=reply, sentences=len(sentences))

        async def each() -> AsyncIterator[str]:
            for sentence in sentences:
                yield sentence

        await self._play(turn, end, each())

    async def _answer_streaming(self, transcript: str, end: TurnEnd, turn: TurnResult) -> bool:
        """Speak each sentence of the reply as soon as the agent has written it."""
        s = self.session
        started = s.bus.now()
        written: list[str] = []  # the reply text so far (after a cut: what was heard, then its continuation)
        failed: list[ProviderError] = []

        # Sentences handed to TTS: the TTS chain finishes each one (from the first unheard word if
        # its provider breaks), and the next is asked for only then, so these are what the caller
        # hears of the reply. A reply cut mid-stream continues after them.
        spoken: list[str] = []

        async def sentences() -> AsyncIterator[str]:
            buffer = ""
            try:
                deltas = self.agent.stream(transcript, s.conversation, s.info, heard=lambda: " ".join(spoken))
                async with contextlib.aclosing(deltas) as stream:
                    async for delta in stream:
                        if "agent_first_token" not in turn.wall_latency_ms:
                            turn.wall_latency_ms["agent_first_token"] = (s.bus.now() - started) * 1000
                        if delta.restart:  # cut mid-reply: what was heard stays, its unspoken tail is gone
                            written[:] = [delta.kept] if delta.kept else []
                            buffer = ""
                        written.append(delta.text)
                        buffer += delta.text
                        pieces = split_sentences(buffer)
                        if len(pieces) < 2:
                            continue
                        buffer = pieces[-1] + (" " if buffer[-1:].isspace() else "")
                        for piece in pieces[:-1]:
                            spoken.append(piece)
                            yield piece
            except ProviderError as exc:
                failed.append(exc)
                return
            for piece in split_sentences(buffer):
                spoken.append(piece)
                yield piece

        try:
            ok = await s.respond(turn, self._speak_stream(turn, end, sentences()))
        finally:
            reply = "".join(written).strip()
            if reply and not failed:
                turn.wall_latency_ms["agent"] = (s.bus.now() - started) * 1000
                turn.reply = reply
                s.conversation.add("assistant", reply)
                s.bus.emit(
                    EventType.AGENT_REPLY, turn=turn.index, provider=getattr(self.agent, "last_used", None),
                    text=reply, latency_ms=round(turn.wall_latency_ms["agent"], 1),
                    first_token_ms=round(turn.wall_latency_ms.get("agent_first_token", 0.0), 1),
                )
        if failed:
            s.stage_failed("agent", failed[0], turn)
            return False
        return ok

    async def _speak_stream(self, turn: TurnResult, end: TurnEnd, sentences: AsyncIterator[str]) -> None:
        self.session.bus.emit(EventType.TTS_START, turn=turn.index, text="", streaming=True)
        await self._play(turn, end, sentences)

    async def _play(self, turn: TurnResult, end: TurnEnd, sentences: AsyncIterator[str]) -> None:
        """Synthesize each sentence into the caller's playback as it comes, then let the sink drain."""
        s = self.session
        played = Playback(s, turn, end)
        try:
            async with contextlib.aclosing(sentences) as pieces:
                async for sentence in pieces:
                    async with contextlib.aclosing(self.tts.synthesize(sentence)) as chunks:
                        async for chunk in chunks:
                            await played.write(chunk)
            await s.sink.drain()
        finally:
            turn.tts_provider = s.last_provider.get("tts") or turn.tts_provider
            played.done()
