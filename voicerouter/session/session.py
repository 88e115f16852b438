"""One voice session: audio frames in, VAD and turn detection, STT -> agent -> TTS (or S2S), audio out.

Frame intake never waits for a provider: each turn's STT/agent/TTS work runs as a task while
frames keep flowing, so speech during a reply is heard (barge-in) and the next turn is captured
from its first syllable. Turns are answered in order: a turn's agent call waits for the previous
turn's reply. The utterance audio (VAD pre-roll included) is kept until its transcript is final,
so a failed streaming STT can still be replaced by a batch transcription of the whole utterance.

Error policy: a provider error that escapes a stage (every provider of it failed) ends that turn
with an `error` event and the session goes on with the next turn; when two turns in a row fail
that way the providers are considered down and the session ends with exit code 3
(`EXIT_PROVIDER`). Any other error (a bug, a broken sink) ends the session and is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from voicerouter.audio.convert import frame_bytes
from voicerouter.config.secrets import redact
from voicerouter.detect.turn import TurnDecision, TurnDetector
from voicerouter.detect.vad import VoiceActivityDetector
from voicerouter.errors import EXIT_PROVIDER, ConfigError, ProviderError
from voicerouter.providers.base import (
    PIPELINE_RATE,
    Agent,
    AudioChunk,
    BuildContext,
    Conversation,
    S2SSession,
    SessionInfo,
    Transcript,
)
from voicerouter.resilience import SessionAdmission, build_stage, wrap_agent
from voicerouter.routing.plan import SessionPlan, StagePlan
from voicerouter.session.events import Event, EventBus, EventType
from voicerouter.session.results import SessionError, SessionResult, TurnResult
from voicerouter.session.sentences import split_sentences

# Turns in a row whose stage failed entirely before the session gives up.
DOWN_TURNS_LIMIT = 2


@dataclass
class _Capture:
    """The audio of the turn being spoken, and the streaming work fed from it."""

    index: int
    start_s: float
    buffer: bytearray = field(default_factory=bytearray)
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[Any] | None = None  # streams frames to the STT stream or S2S session
    last_partial: str = ""

    def feed(self, pcm: bytes) -> None:
        self.buffer += pcm
        if self.worker is not None:
            self.queue.put_nowait(pcm)


@dataclass
class _TurnEnd:
    """The turn detector's decision, in the session's own terms."""

    reason: str
    start_s: float
    end_s: float
    delay_ms: float
    t: float  # session clock when the turn ended


class Session:
    """Runs one session of `plan` from `source` to `sink`; providers come from `pool`.

    `agent` replaces the plan's agent (a Python object with `reply()`); `lockstep` makes intake
    wait for each turn's reply before reading on, which keeps faster-than-real-time replays
    deterministic (no spurious barge-in from compressed time). By default it is on exactly when
    the source is not paced in real time.
    """

    def __init__(
        self,
        plan: SessionPlan,
        pool: Any,
        source: Any,
        sink: Any,
        *,
        bus: EventBus | None = None,
        faults: Any = None,
        env: Mapping[str, str] | None = None,
        agent: Agent | None = None,
        lockstep: bool | None = None,
        tracer_provider: Any = None,
    ) -> None:
        self.plan = plan
        self.tracer_provider = tracer_provider  # None: trace only when OTEL_* asks for it
        self.pool = pool
        self.source = source
        self.sink = sink
        self.faults = faults
        self.env = dict(os.environ if env is None else env)
        ctx = plan.context
        self.info = SessionInfo(
            session_id=plan.session_id,
            tenant=ctx.tenant,
            region=ctx.region,
            route=plan.route,
            flags=dict(ctx.flags),
        )
        self.bus = bus or EventBus(plan.session_id, tenant=ctx.tenant, region=ctx.region, route=plan.route)
        self.conversation = Conversation()
        self.lockstep = (not getattr(source, "realtime", True)) if lockstep is None else lockstep
        self._agent: Any = agent
        self._custom_agent = agent is not None
        self._stt: Any = None
        self._tts: Any = None
        self._s2s: Any = None
        self._s2s_session: S2SSession | None = None
        self._owned: list[Any] = []
        self._s2s_lock = asyncio.Lock()
        self._s2s_idle = asyncio.Event()
        self._s2s_idle.set()
        self._last_provider: dict[str, str] = {}
        self._turns: list[TurnResult] = []
        self._errors: list[SessionError] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._last_turn_task: asyncio.Task[Any] | None = None
        self._speaking: tuple[asyncio.Task[Any], TurnResult] | None = None
        self._barged = False  # the current speech region already interrupted a reply
        self._capture: _Capture | None = None
        self._next_index = 1
        self._audio_t = 0.0
        self._down_streak = 0
        self._end_reason: str | None = None
        self._stop = asyncio.Event()
        self._intake_task: asyncio.Task[Any] | None = None
        self._turn_detector = TurnDetector(plan.turn)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self) -> SessionResult:
        """Run until the source ends, `stop()` is called or the providers are down.

        Raises before any audio is read when a secret is missing (`MissingSecretError`) or the
        route or a stage has no capacity left (`CapacityError`); both exit with code 3.
        """
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.bus.subscribe(self._observe)
        names = [name for stage in self.plan.stages() for name in stage.providers]
        await _maybe_await(self.pool.check_secrets(names))
        from voicerouter.observe.otel import attach_tracing

        detach_tracing = attach_tracing(self.bus, self.tracer_provider, env=self.env)
        async with SessionAdmission(self.plan, self.bus):
            await self._prepare()
            self.bus.emit(
                EventType.SESSION_START,
                pipeline=self.plan.pipeline,
                stt=_names(self.plan.stt),
                tts=_names(self.plan.tts),
                s2s=_names(self.plan.s2s),
                source=str(getattr(self.source, "name", type(self.source).__name__)),
            )
            try:
                await self._run_intake()
            finally:
                await self._cleanup()
        reason = self._end_reason or ("stopped" if self._stop.is_set() else "end_of_audio")
        self.bus.emit(EventType.SESSION_END, turns=len(self._turns), reason=reason)
        detach_tracing()
        return SessionResult(
            session_id=self.plan.session_id,
            route=self.plan.route,
            pipeline=self.plan.pipeline,
            turns=list(self._turns),
            errors=list(self._errors),
            events=list(self.bus.history),
            reason=reason,
            exit_code=EXIT_PROVIDER if reason == "providers_down" else 0,
            providers={s.stage: list(s.providers) for s in self.plan.stages()},
        )

    async def _run_intake(self) -> None:
        self._intake_task = asyncio.create_task(self._intake())
        try:
            await self._intake_task
        except asyncio.CancelledError:
            # stop() and "providers down" cancel intake on purpose; anything else is ours to pass on.
            if not (self._stop.is_set() or self._end_reason is not None):
                raise
        if self._end_reason is None:
            pending = [t for t in self._tasks if not t.done()]
            if pending:
                await asyncio.wait(pending)
        self._raise_task_failures()
        await self.sink.drain()

    async def stop(self) -> None:
        """End the session: stop reading audio, cancel the reply in progress."""
        self._stop.set()
        if self._intake_task is not None and not self._intake_task.done():
            self._intake_task.cancel()
        for task in self._tasks:
            task.cancel()

    async def _prepare(self) -> None:
        if self.plan.pipeline == "s2s":
            if self.plan.s2s is None:
                raise _no_stage("s2s", self.plan.route)
            self._s2s = await self._build_stage(self.plan.s2s)
        else:
            if self.plan.stt is None or self.plan.tts is None:
                raise _no_stage("stt" if self.plan.stt is None else "tts", self.plan.route)
            self._stt = await self._build_stage(self.plan.stt)
            self._tts = await self._build_stage(self.plan.tts)
            self._agent = self._wrap_agent(self._agent or self._build_agent())

    async def _build_stage(self, stage: StagePlan) -> Any:
        wrapper = build_stage(stage, self.pool, self.plan.resilience, self.bus, session=self.info, faults=self.faults)
        self._owned.append(wrapper)
        return wrapper

    def _build_agent(self) -> Agent:
        from voicerouter.session.agents import build_agent

        return build_agent(self.plan.agent, BuildContext(env=self.env, session=self.info))

    def _wrap_agent(self, agent: Agent) -> Agent:
        return wrap_agent(
            agent, self.plan.resilience, self.bus, session=self.info, fallback_reply=self.plan.agent.fallback_reply
        )

    async def _cleanup(self) -> None:
        for task in self._tasks:
            if not task.done():
                task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._capture is not None and self._capture.worker is not None:
            self._capture.worker.cancel()
            await asyncio.wait([self._capture.worker])
        if self._s2s_session is not None:
            with contextlib.suppress(ProviderError):
                await self._s2s_session.aclose()
        # Stage wrappers are ours; the providers inside them belong to the pool, which closes them.
        for wrapper in self._owned:
            closer = getattr(wrapper, "aclose", None)
            if closer is not None:
                with contextlib.suppress(ProviderError):
                    await closer()
        if self._agent is not None and not self._custom_agent:
            with contextlib.suppress(ProviderError):
                await self._agent.aclose()

    def _observe(self, event: Event) -> None:
        if event.type == EventType.PROVIDER_USED:
            stage = event.data.get("stage")
            provider = event.data.get("provider") or event.provider
            if stage and provider:
                self._last_provider[str(stage)] = str(provider)

    def _raise_task_failures(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    # ---- intake ----------------------------------------------------------------------------

    async def _frames(self) -> AsyncIterator[bytes]:
        """The source's audio cut into VAD-sized frames (sources may use another frame size)."""
        size = frame_bytes(self.plan.vad.frame_ms, PIPELINE_RATE)
        pending = bytearray()
        async for frame in self.source.frames():
            if len(frame) == size and not pending:
                yield frame
                continue
            pending += frame
            while len(pending) >= size:
                yield bytes(pending[:size])
                del pending[:size]

    async def _intake(self) -> None:
        vad = VoiceActivityDetector(self.plan.vad)
        turns = self._turn_detector
        frame_s = self.plan.vad.frame_ms / 1000
        half_duplex = self.plan.barge_in.half_duplex
        async for frame in self._frames():
            if self._stop.is_set() or self._end_reason is not None:
                return
            self._raise_task_failures()
            self._audio_t += frame_s
            if half_duplex and self._is_speaking():
                # The microphone is muted while the reply plays: the detectors hear silence, so
                # their clocks keep running and a speech region in progress ends normally.
                frame = bytes(len(frame))
            update = vad.process(frame)
            self._feed(frame, update)
            # Speech events carry the turn the speech belongs to (the one being captured).
            turn = self._capture.index if self._capture is not None else None
            if update.started:
                self.bus.emit(EventType.SPEECH_START, turn=turn, audio_s=round(update.speech_start_s or 0.0, 3))
                self._barged = False
            if update.speaking:
                self._maybe_barge_in(update)
            if update.ended:
                self.bus.emit(EventType.SPEECH_END, turn=turn, audio_s=round(update.speech_end_s or update.t, 3))
            decision = turns.feed(update)
            if decision is not None:
                await self._turn_ended(decision)
        if self._stop.is_set() or self._end_reason is not None:
            return
        decision = turns.finish(self._audio_t, vad.speaking)
        if decision is not None:
            await self._turn_ended(decision)
        elif self._capture is not None:
            await self._drop_capture()

    def _feed(self, frame: bytes, update: Any) -> None:
        if self._capture is None:
            # A new turn starts with speech; after a forced end (max_duration) it goes on mid-speech.
            if not (update.started or (update.speaking and self._turn_detector.in_turn)):
                return
            start = update.speech_start_s if update.started else update.t - self.plan.vad.frame_ms / 1000
            self._capture = _Capture(index=self._next_index, start_s=start or 0.0)
            self._start_worker(self._capture)
            self._capture.feed(update.preroll or frame)
            return
        self._capture.feed(frame)

    def _start_worker(self, capture: _Capture) -> None:
        if self.plan.pipeline == "s2s":
            capture.worker = asyncio.create_task(self._s2s_sender(capture))
        elif getattr(self._stt, "supports_streaming", False):
            capture.worker = asyncio.create_task(self._stt_streamer(capture))

    async def _drop_capture(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None and capture.worker is not None:
            capture.worker.cancel()
            await asyncio.wait([capture.worker])

    def _is_speaking(self) -> bool:
        return self._speaking is not None and not self._speaking[0].done()

    def _maybe_barge_in(self, update: Any) -> None:
        config = self.plan.barge_in
        if not config.enabled or self._barged or not self._is_speaking():
            return
        start = update.speech_start_s if update.speech_start_s is not None else update.t
        speech_ms = (update.t - start) * 1000
        if speech_ms < config.min_speech_ms:
            return
        task, turn = self._speaking  # type: ignore[misc]
        self._barged = True
        self.sink.clear()
        task.cancel()
        turn.interrupted = True
        self.bus.emit(EventType.BARGE_IN, turn=turn.index, audio_s=round(update.t, 3), speech_ms=round(speech_ms))

    async def _turn_ended(self, decision: TurnDecision) -> None:
        capture = self._capture
        self._capture = None
        if decision.discarded:
            # Too short to be a turn (a cough, a click): forget its audio, keep the turn number.
            self.bus.emit(
                EventType.WARNING, message="speech too short for a turn, ignored", stage="turn",
                start_s=round(decision.start_s, 3), end_s=round(decision.speech_end_s, 3),
            )
            if capture is not None:
                self._capture = capture
                await self._drop_capture()
            return
        if capture is None:
            return  # the detector ended a turn whose speech we never saw start (cannot happen with one VAD)
        info = _TurnEnd(
            reason=decision.reason,
            start_s=decision.start_s,
            end_s=decision.speech_end_s,
            delay_ms=decision.delay_ms,
            t=self.bus.now(),
        )
        self._next_index += 1
        self.bus.emit(
            EventType.TURN_END,
            turn=capture.index,
            reason=info.reason,
            start_s=round(info.start_s, 3),
            end_s=round(info.end_s, 3),
            delay_ms=round(info.delay_ms, 1),
        )
        turn = TurnResult(index=capture.index, start_s=info.start_s, end_s=info.end_s, reason=info.reason)
        turn.latency_ms["turn_end_delay"] = info.delay_ms
        self._turns.append(turn)
        previous = self._last_turn_task
        task = asyncio.create_task(self._run_turn(capture, info, turn, previous))
        # Finished turns are forgotten (a live session runs for hours); failed ones stay to be raised.
        self._tasks = [t for t in self._tasks if not t.done() or (not t.cancelled() and t.exception())]
        self._tasks.append(task)
        self._last_turn_task = task
        if self.lockstep:
            await asyncio.wait([task])

    # ---- one turn --------------------------------------------------------------------------

    async def _run_turn(
        self, capture: _Capture, end: _TurnEnd, turn: TurnResult, previous: asyncio.Task[Any] | None
    ) -> None:
        failed = False
        try:
            if self.plan.pipeline == "s2s":
                failed = not await self._s2s_turn(capture, end, turn, previous)
            else:
                failed = not await self._pipeline_turn(capture, end, turn, previous)
        finally:
            if capture.worker is not None and not capture.worker.done():
                capture.worker.cancel()
        if turn.error is None and turn.transcript == "" and turn.reply is None:
            return  # nothing was said (noise): neither a success nor a failure
        self._down_streak = self._down_streak + 1 if failed else 0
        if self._down_streak >= DOWN_TURNS_LIMIT and self._end_reason is None:
            self._end_reason = "providers_down"
            self.bus.emit(
                EventType.ERROR,
                turn=turn.index,
                message=f"{DOWN_TURNS_LIMIT} turns in a row failed: ending the session",
                stage="session",
                error_type="ProvidersDown",
            )
            if self._intake_task is not None and not self._intake_task.done():
                self._intake_task.cancel()

    async def _pipeline_turn(
        self, capture: _Capture, end: _TurnEnd, turn: TurnResult, previous: asyncio.Task[Any] | None
    ) -> bool:
        transcript = await self._final_transcript(capture, end, turn)
        if transcript is None:
            return False
        if not transcript.strip():
            # Speech without words (noise, a cough the VAD let through) is not a turn of the result.
            self.bus.emit(EventType.WARNING, turn=turn.index, message="no words recognised; turn ignored", stage="stt")
            self._turns.remove(turn)
            return True
        if previous is not None:
            await asyncio.wait([previous])  # answer turns in order
        self.conversation.add("user", transcript)
        started = self.bus.now()
        try:
            reply = await self._agent.reply(transcript, self.conversation, self.info)
        except ProviderError as exc:
            self._stage_failed("agent", exc, turn)
            return False
        turn.latency_ms["agent"] = (self.bus.now() - started) * 1000
        turn.reply = reply
        self.conversation.add("assistant", reply)
        self.bus.emit(
            EventType.AGENT_REPLY,
            turn=turn.index,
            provider=getattr(self._agent, "name", None),
            text=reply,
            latency_ms=round(turn.latency_ms["agent"], 1),
        )
        if not reply.strip():
            return True
        return await self._respond(turn, self._speak(turn, end, reply))

    async def _final_transcript(self, capture: _Capture, end: _TurnEnd, turn: TurnResult) -> str | None:
        result: Transcript | None = None
        try:
            if capture.worker is not None:
                capture.queue.put_nowait(None)
                await asyncio.wait([capture.worker])
                if capture.worker.cancelled():
                    raise asyncio.CancelledError
                exc = capture.worker.exception()
                if isinstance(exc, ProviderError):
                    # No lost words: the whole utterance is still buffered, transcribe it in one go.
                    self.bus.emit(
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
                result = await self._stt.transcribe(AudioChunk(bytes(capture.buffer), PIPELINE_RATE))
        except ProviderError as exc:
            self._stage_failed("stt", exc, turn)
            return None
        turn.latency_ms["stt_final"] = (self.bus.now() - end.t) * 1000
        turn.transcript = result.text.strip()
        turn.stt_provider = result.provider or self._last_provider.get("stt")
        self.bus.emit(
            EventType.FINAL_TRANSCRIPT,
            turn=turn.index,
            provider=turn.stt_provider,
            text=turn.transcript,
            latency_ms=round(turn.latency_ms["stt_final"], 1),
        )
        return turn.transcript

    async def _stt_streamer(self, capture: _Capture) -> Transcript:
        stream = await self._stt.open_stream(PIPELINE_RATE, on_partial=self._partial_callback(capture))
        try:
            while (pcm := await capture.queue.get()) is not None:
                await stream.send(pcm)
            return await stream.finish()
        finally:
            with contextlib.suppress(ProviderError):
                await stream.aclose()

    def _partial_callback(self, capture: _Capture) -> Any:
        def on_partial(transcript: Transcript) -> None:
            # Engines may report from their own thread; the bus and detector live on the loop.
            if threading.get_ident() != self._loop_thread and self._loop is not None:
                if not self._loop.is_closed():  # a partial racing the end of the session is moot
                    self._loop.call_soon_threadsafe(self._on_partial, capture, transcript)
            else:
                self._on_partial(capture, transcript)

        return on_partial

    def _on_partial(self, capture: _Capture, transcript: Transcript) -> None:
        text = transcript.text.strip()
        if not text or text == capture.last_partial:
            return
        capture.last_partial = text
        if self._capture is capture:
            self._turn_detector.on_partial(text)
        self.bus.emit(EventType.PARTIAL_TRANSCRIPT, turn=capture.index, provider=transcript.provider, text=text)

    async def _respond(self, turn: TurnResult, work: Any) -> bool:
        """Run the spoken reply as its own task, so a barge-in can cancel just that."""
        task = asyncio.create_task(work)
        self._speaking = (task, turn)
        try:
            await asyncio.wait([task])
        finally:
            if self._speaking is not None and self._speaking[0] is task:
                self._speaking = None
            if not task.done():
                task.cancel()
                await asyncio.wait([task])
        if task.cancelled():
            turn.interrupted = True
            return True
        exc = task.exception()
        if isinstance(exc, ProviderError):
            self._stage_failed(self.plan.pipeline == "s2s" and "s2s" or "tts", exc, turn)
            return False
        if exc is not None:
            raise exc
        return True

    async def _speak(self, turn: TurnResult, end: _TurnEnd, reply: str) -> None:
        sentences = split_sentences(reply)
        self.bus.emit(EventType.TTS_START, turn=turn.index, text=reply, sentences=len(sentences))
        played = _Playback(self, turn, end)
        try:
            for sentence in sentences:
                async with contextlib.aclosing(self._tts.synthesize(sentence)) as chunks:
                    async for chunk in chunks:
                        await played.write(chunk)
            await self.sink.drain()
        finally:
            turn.tts_provider = self._last_provider.get("tts") or turn.tts_provider
            played.done()

    # ---- speech to speech ------------------------------------------------------------------

    async def _s2s_connect(self) -> S2SSession:
        async with self._s2s_lock:  # the next turn's sender and a reply may both need a connection
            if self._s2s_session is None:
                self._s2s_session = await self._s2s.connect(
                    instructions=self.plan.instructions, history=self.conversation
                )
            return self._s2s_session

    async def _s2s_sender(self, capture: _Capture) -> None:
        while (pcm := await capture.queue.get()) is not None:
            # Audio of the next turn waits while a reply streams (a barge-in ends the reply), so
            # it is committed with its own turn, never with the one being answered.
            await self._s2s_idle.wait()
            session = await self._s2s_connect()
            await session.send_audio(pcm, PIPELINE_RATE)

    async def _s2s_turn(
        self, capture: _Capture, end: _TurnEnd, turn: TurnResult, previous: asyncio.Task[Any] | None
    ) -> bool:
        try:
            if capture.worker is not None:
                capture.queue.put_nowait(None)
                await asyncio.wait([capture.worker])
                if capture.worker.cancelled():
                    raise asyncio.CancelledError
                if capture.worker.exception() is not None:
                    raise capture.worker.exception()  # type: ignore[misc]
        except ProviderError as exc:
            self._s2s_session = None  # reconnect (with the history) on the next turn
            self._stage_failed("s2s", exc, turn)
            return False
        if previous is not None:
            await asyncio.wait([previous])
        ok = await self._respond(turn, self._s2s_respond(turn, end))
        if not ok:
            self._s2s_session = None
        return ok

    async def _s2s_respond(self, turn: TurnResult, end: _TurnEnd) -> None:
        session = await self._s2s_connect()
        reply: list[str] = []
        played = _Playback(self, turn, end)
        self.bus.emit(EventType.TTS_START, turn=turn.index, text="")
        self._s2s_idle.clear()
        seen = len(self.bus.history)
        try:
            async with contextlib.aclosing(session.respond()) as events:
                async for event in events:
                    seen, restarted = self._s2s_restarted(seen)
                    if restarted:
                        reply.clear()  # the next provider speaks the whole reply again
                    if event.type == "user_transcript":
                        self._s2s_user_text(turn, end, event.text)
                    elif event.type == "reply_text":
                        reply.append(event.text)
                    elif event.type == "audio" and event.audio is not None:
                        await played.write(event.audio)
                    # "done" is the last event; the iterator ends by itself (breaking out early
                    # would look like a cut reply to the provider).
            await self.sink.drain()
        finally:
            self._s2s_idle.set()
            turn.tts_provider = turn.stt_provider = self._last_provider.get("s2s")
            if turn.transcript is None:
                turn.transcript = ""
            text = "".join(reply).strip()
            if text:
                turn.reply = text
                self.conversation.add("assistant", text)
                self.bus.emit(EventType.AGENT_REPLY, turn=turn.index, provider=turn.tts_provider, text=text)
            played.done()

    def _s2s_restarted(self, seen: int) -> tuple[int, bool]:
        """Whether the S2S chain failed over mid-reply since `seen` (it restarts the reply from the start)."""
        history = self.bus.history
        restarted = any(
            e.type == EventType.FAILOVER and e.data.get("stage") == "s2s" and e.data.get("restarted_reply")
            for e in history[seen:]
        )
        return len(history), restarted

    def _s2s_user_text(self, turn: TurnResult, end: _TurnEnd, text: str) -> None:
        again = turn.transcript is not None  # a fallback provider transcribed the resent turn
        turn.transcript = text.strip()
        turn.latency_ms.setdefault("stt_final", (self.bus.now() - end.t) * 1000)
        messages = self.conversation.messages
        if again and messages and messages[-1].role == "user":
            messages[-1].text = turn.transcript
        else:
            self.conversation.add("user", turn.transcript)
        self.bus.emit(
            EventType.FINAL_TRANSCRIPT,
            turn=turn.index,
            provider=self._last_provider.get("s2s"),
            text=turn.transcript,
            latency_ms=round(turn.latency_ms["stt_final"], 1),
        )

    # ---- errors ----------------------------------------------------------------------------

    def _stage_failed(self, stage: str, exc: ProviderError, turn: TurnResult) -> None:
        exc.with_context(route=self.plan.route, session_id=self.plan.session_id)
        message = redact(str(exc))
        turn.error = message
        self._errors.append(SessionError(message, stage=stage, error_type=type(exc).__name__, turn=turn.index))
        self.bus.emit(
            EventType.ERROR, turn=turn.index, provider=exc.provider, message=message, stage=stage,
            error_type=type(exc).__name__,
        )


class _Playback:
    """Writes one reply's audio to the sink and reports first audio and the amount played."""

    def __init__(self, session: Session, turn: TurnResult, end: _TurnEnd) -> None:
        self.session = session
        self.turn = turn
        self.end = end
        self.seconds = 0.0
        self.start_audio_s: float | None = None

    async def write(self, chunk: AudioChunk) -> None:
        if not chunk.pcm:
            return
        if self.start_audio_s is None:
            s = self.session
            self.start_audio_s = s._audio_t
            first = (s.bus.now() - self.end.t) * 1000
            self.turn.latency_ms["tts_first_audio"] = first
            self.turn.latency_ms["voice_to_voice"] = self.end.delay_ms + first
            stage = "s2s" if s.plan.pipeline == "s2s" else "tts"
            s.bus.emit(
                EventType.TTS_FIRST_AUDIO,
                turn=self.turn.index,
                provider=s._last_provider.get(stage),
                latency_ms=round(first, 1),
            )
        await self.session.sink.write(chunk)
        self.seconds += chunk.duration_s

    def done(self) -> None:
        self.turn.reply_audio_s = self.seconds
        self.session.bus.emit(
            EventType.TTS_DONE,
            turn=self.turn.index,
            provider=self.turn.tts_provider,
            audio_s_out=round(self.seconds, 3),
            start_audio_s=None if self.start_audio_s is None else round(self.start_audio_s, 3),
            interrupted=self.turn.interrupted,
        )


def _names(stage: StagePlan | None) -> list[str] | None:
    return list(stage.providers) if stage is not None else None


def _no_stage(stage: str, route: str) -> ConfigError:
    return ConfigError(
        f"route {route!r} has no {stage} providers", hint=f"add `{stage}: [...]` to the route or to defaults"
    )


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
