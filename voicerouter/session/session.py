"""One voice session: audio frames in, VAD and turn detection, STT -> agent -> TTS (or S2S), audio out.

This module holds the session's life cycle and its intake (frames, VAD, turn detection, barge-in);
a turn is answered by `pipeline_turn.PipelineTurns` or `s2s_turn.S2STurns`, and spoken through
`playback.ReplyPlayer`. Audio comes from an `AudioSource` and goes to an `AudioSink`, whatever
the transport behind them.

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
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any

from voicerouter.audio.convert import frame_bytes
from voicerouter.audio.sink import AudioSink
from voicerouter.audio.source import AudioSource
from voicerouter.config.secrets import redact
from voicerouter.detect.turn import TurnDecision, TurnDetector
from voicerouter.detect.vad import VadUpdate, VoiceActivityDetector
from voicerouter.errors import EXIT_PROVIDER, ConfigError, ProviderError
from voicerouter.providers.base import PIPELINE_RATE, Agent, BuildContext, Conversation, SessionInfo, Transcript
from voicerouter.providers.closing import reap
from voicerouter.resilience import SessionAdmission, build_stage, wrap_agent
from voicerouter.routing.plan import SessionPlan, StagePlan
from voicerouter.session.capture import CANCEL_GRACE_S, Capture, TurnEnd
from voicerouter.session.events import Event, EventBus, EventType
from voicerouter.session.keypad import KeypadCollector, KeypadEntry, normalize_digit
from voicerouter.session.pipeline_turn import PipelineTurns
from voicerouter.session.playback import ReplyPlayer
from voicerouter.session.results import SessionError, SessionResult, TurnResult
from voicerouter.session.s2s_turn import S2STurns

# Turns in a row whose stage failed entirely before the session gives up.
DOWN_TURNS_LIMIT = 2
LIVE_STT_PIECE_MS = 40  # audio per message to a streaming STT (or S2S) in a real-time session


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
        source: AudioSource,
        sink: AudioSink,
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
        self._agent: Agent | None = agent
        self._custom_agent = agent is not None
        self._turns_runner: PipelineTurns | S2STurns | None = None
        self._owned: list[Any] = []
        self._player = ReplyPlayer(sink, on_stuck=self._reply_stuck)
        self.last_provider: dict[str, str] = {}  # stage -> the provider that served it last
        self._turns: list[TurnResult] = []
        self._errors: list[SessionError] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._last_turn_task: asyncio.Task[Any] | None = None
        self._task_turns: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = weakref.WeakKeyDictionary()
        self._barged = False  # the current speech region already interrupted a reply
        self._capture: Capture | None = None
        self._next_index = 1
        self.audio_t = 0.0  # the session's audio clock: seconds of input read so far
        self._down_streak = 0
        self._end_reason: str | None = None
        self._stop = asyncio.Event()
        self._intake_task: asyncio.Task[Any] | None = None
        self._turn_detector = TurnDetector(plan.turn)
        self._keypad = KeypadCollector(plan.dtmf)
        self._keys: list[tuple[str, float | None]] = []  # keys pressed before the session started
        self._live = False  # session_start was emitted: keys are handled as they come
        self._keypad_task: asyncio.Task[Any] | None = None  # the keypad turn a lockstep intake waits for

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self) -> SessionResult:
        """Run until the source ends, `stop()` is called or the providers are down.

        Raises before any audio is read when a secret is missing (`MissingSecretError`) or the
        route or a stage has no capacity left (`CapacityError`); both exit with code 3.
        """
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
            self._live = True
            for key, at in self._keys:
                self._handle_key(key, at)
            self._keys.clear()
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
            turns=sorted(self._turns, key=lambda turn: turn.index),  # a keypad turn may end before a spoken one
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
        if self._end_reason is None and not self._stop.is_set():
            # the source ended: let the turns in progress finish (each is bounded by its stages'
            # deadlines); after stop() or "providers down" they are cancelled by _cleanup instead
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
            self._turns_runner = S2STurns(self, await self._build_stage(self.plan.s2s))
        else:
            if self.plan.stt is None or self.plan.tts is None:
                raise _no_stage("stt" if self.plan.stt is None else "tts", self.plan.route)
            stt = await self._build_stage(self.plan.stt)
            tts = await self._build_stage(self.plan.tts)
            self._agent = self._wrap_agent(self._agent or self._build_agent())
            self._turns_runner = PipelineTurns(self, stt, tts, self._agent)

    async def _build_stage(self, stage: StagePlan) -> Any:
        wrapper = build_stage(stage, self.pool, self.plan.resilience, self.bus, session=self.info, faults=self.faults)
        self._owned.append(wrapper)
        return wrapper

    def _build_agent(self) -> list[Agent]:
        from voicerouter.session.agents import build_agents

        return build_agents(self.plan.agent, BuildContext(env=self.env, session=self.info))

    def _wrap_agent(self, agent: Agent | list[Agent]) -> Agent:
        configs = None if self._custom_agent else self.plan.agent.chain()
        return wrap_agent(
            agent, self.plan.resilience, self.bus, session=self.info, fallback_reply=self.plan.agent.fallback_reply,
            faults=self.faults, configs=configs,
        )

    async def _cleanup(self) -> None:
        # A turn task that swallows its cancellation (a provider client or custom agent that
        # catches CancelledError) is waited for at most CANCEL_GRACE_S, reported, and left behind.
        running = [t for t in self._tasks if not t.done()]
        for task in await reap(running, timeout_s=CANCEL_GRACE_S):
            turn = self._task_turns.get(task)
            self.bus.emit(
                EventType.WARNING, turn=turn, stage="session", reason="stuck_task",
                message=f"turn {turn}'s work did not stop within {CANCEL_GRACE_S:g} s of its cancellation; "
                "the session ends without it",
            )
        if self._capture is not None:
            await self._capture.cancel_worker()
        if isinstance(self._turns_runner, S2STurns):
            await self._turns_runner.aclose()
        # Stage wrappers are ours; the providers inside them belong to the pool, which closes them.
        for wrapper in self._owned:
            closer = getattr(wrapper, "aclose", None)
            if closer is not None:
                with contextlib.suppress(ProviderError):
                    await closer()
        if self._agent is not None and not self._custom_agent:
            with contextlib.suppress(ProviderError):
                await self._agent.aclose()

    def _reply_stuck(self, turn: TurnResult, waited_s: float) -> None:
        self.bus.emit(
            EventType.WARNING, turn=turn.index, stage="session", reason="stuck_task",
            message=f"turn {turn.index}'s reply did not stop within {waited_s:g} s of its cancellation; "
            "the session goes on without it",
        )

    def _observe(self, event: Event) -> None:
        if event.type == EventType.PROVIDER_USED:
            stage = event.data.get("stage")
            provider = event.data.get("provider") or event.provider
            if stage and provider:
                self.last_provider[str(stage)] = str(provider)

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
            if self.lockstep and self._keypad_task is not None:
                # A fast replay answers a keypad turn before reading on, as it does a spoken one.
                task, self._keypad_task = self._keypad_task, None
                await asyncio.wait([task])
            self.audio_t += frame_s
            if (entry := self._keypad.due(self.audio_t)) is not None:
                self._keypad_turn(entry)
            if half_duplex and self._player.speaking:
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
            if self.lockstep and self._capture is not None:
                await self._turns_runner.catch_up(self._capture)
            decision = turns.feed(update)
            if decision is not None:
                await self._turn_ended(decision)
        if self._stop.is_set() or self._end_reason is not None:
            return
        if (entry := self._keypad.finish()) is not None:
            self._keypad_turn(entry)
        decision = turns.finish(self.audio_t, vad.speaking)
        if decision is not None:
            await self._turn_ended(decision)
        elif self._capture is not None:
            await self._drop_capture()

    def _feed(self, frame: bytes, update: VadUpdate) -> None:
        if self._capture is None:
            # A new turn starts with speech; after a forced end (max_duration) it goes on mid-speech.
            if not (update.started or (update.speaking and self._turn_detector.in_turn)):
                return
            start = update.speech_start_s if update.started else update.t - self.plan.vad.frame_ms / 1000
            # A real-time session sends the STT 40 ms pieces (a fast replay, every frame: it catches
            # the stream up before each decision anyway).
            piece = 0 if self.lockstep else frame_bytes(LIVE_STT_PIECE_MS, PIPELINE_RATE)
            self._capture = Capture(index=self._next_index, start_s=start or 0.0, piece_bytes=piece)
            self._next_index += 1
            assert self._turns_runner is not None
            self._turns_runner.start_worker(self._capture)
            self._capture.feed(update.preroll or frame)
            return
        self._capture.feed(frame)

    async def _drop_capture(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            if capture.index == self._next_index - 1:
                self._next_index -= 1  # a dropped capture gives its turn number back
            await capture.cancel_worker()

    def _maybe_barge_in(self, update: VadUpdate) -> None:
        config = self.plan.barge_in
        if not config.enabled or self._barged or not self._player.speaking:
            return
        start = update.speech_start_s if update.speech_start_s is not None else update.t
        speech_ms = (update.t - start) * 1000
        if speech_ms < config.min_speech_ms:
            return
        turn = self._player.interrupt()
        if turn is None:
            return
        self._barged = True
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
        info = TurnEnd(
            reason=decision.reason,
            start_s=decision.start_s,
            end_s=decision.speech_end_s,
            delay_ms=decision.delay_ms,
            t=self.bus.now(),
            audio_t=self.audio_t,
        )
        self.bus.emit(
            EventType.TURN_END,
            turn=capture.index,
            reason=info.reason,
            start_s=round(info.start_s, 3),
            end_s=round(info.end_s, 3),
            delay_ms=round(info.delay_ms, 1),
        )
        turn = TurnResult(index=capture.index, start_s=info.start_s, end_s=info.end_s, reason=info.reason)
        runner = self._turns_runner
        assert runner is not None
        task = self._start_turn(turn, info, lambda previous: runner.run(capture, info, turn, previous), capture)
        if self.lockstep:
            await asyncio.wait([task])

    def _start_turn(self, turn: TurnResult, end: TurnEnd,
                    answer: Callable[[asyncio.Task[Any] | None], Awaitable[bool]],
                    capture: Capture | None = None) -> asyncio.Task[Any]:
        turn.latency_ms["turn_end_delay"] = turn.wall_latency_ms["turn_end_delay"] = end.delay_ms
        self._turns.append(turn)
        task = asyncio.create_task(self._run_turn(answer, self._last_turn_task, turn, capture),
                                   name=f"turn-{turn.index}")
        self._task_turns[task] = turn.index
        # Finished turns are forgotten (a live session runs for hours); failed ones stay to be raised.
        self._tasks = [t for t in self._tasks if not t.done() or (not t.cancelled() and t.exception())]
        self._tasks.append(task)
        self._last_turn_task = task
        return task

    # ---- keypad (DTMF) ---------------------------------------------------------------------

    def press(self, digit: str, audio_s: float | None = None) -> None:
        """A key pressed on the caller's keypad, at `audio_s` seconds of the caller's audio (default:
        the session's audio clock). It is an event, stops the reply being spoken (`dtmf.barge_in`),
        and with `dtmf.collect` is gathered into a keypad turn for the agent."""
        if self._live:
            self._handle_key(digit, audio_s)
        else:
            self._keys.append((digit, audio_s))

    def _handle_key(self, digit: str, audio_s: float | None) -> None:
        at = self.audio_t if audio_s is None else audio_s
        key = normalize_digit(digit)
        if key is None:
            self.bus.emit(EventType.WARNING, message=f"not a keypad digit: {digit[:8]!r}", stage="dtmf")
            return
        config = self.plan.dtmf
        shown = None if config.mask else key  # masked: events say a key was pressed, not which
        self.bus.emit(EventType.DTMF, digit=shown, audio_s=round(at, 3), **({"masked": True} if config.mask else {}))
        if config.barge_in and (turn := self._player.interrupt()) is not None:
            self.bus.emit(EventType.BARGE_IN, turn=turn.index, audio_s=round(at, 3), cause="dtmf", digit=shown)
        if not config.collect:
            return
        if self.plan.pipeline == "s2s":
            if not self._keypad.pending and key != config.terminator:
                self.bus.emit(EventType.WARNING, message="keypad turns need an stt_tts route; digit not delivered",
                              stage="dtmf")
            return
        if (entry := self._keypad.press(key, at)) is not None:
            self._keypad_turn(entry)

    def _keypad_turn(self, entry: KeypadEntry) -> None:
        """A complete keypad entry is a user turn: its text goes to the agent as a transcript would."""
        if self._stop.is_set() or self._end_reason is not None or not isinstance(self._turns_runner, PipelineTurns):
            return
        index = self._next_index
        self._next_index += 1
        text = self.plan.dtmf.text.format(digits=entry.digits)
        delay_ms = max(0.0, (self.audio_t - entry.end_s) * 1000)
        end = TurnEnd(reason="dtmf", start_s=entry.start_s, end_s=entry.end_s, delay_ms=delay_ms, t=self.bus.now(),
                      audio_t=self.audio_t)
        masked = self.plan.dtmf.mask
        self.bus.emit(
            EventType.TURN_END, turn=index, reason="dtmf", start_s=round(entry.start_s, 3),
            end_s=round(entry.end_s, 3), delay_ms=round(delay_ms, 1), digits=None if masked else entry.digits,
            keys=len(entry.digits), ended_by=entry.ended_by, text=None if masked else text,
            **({"masked": True} if masked else {}),
        )
        turn = TurnResult(index=index, start_s=entry.start_s, end_s=entry.end_s, reason="dtmf")
        turn.transcript = "*" * len(entry.digits) if masked else text  # the agent alone gets masked keys
        runner = self._turns_runner
        self._keypad_task = self._start_turn(turn, end,
                                             lambda previous: runner.answer(text, end, turn, previous, input="dtmf"))

    # ---- one turn ------------------------------------------------------------------------

    async def _run_turn(self, answer: Callable[[asyncio.Task[Any] | None], Awaitable[bool]],
                        previous: asyncio.Task[Any] | None, turn: TurnResult, capture: Capture | None) -> None:
        failed = False
        try:
            failed = not await answer(previous)
        finally:
            if capture is not None and capture.worker is not None and not capture.worker.done():
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

    # ---- for the turn runners --------------------------------------------------------------

    def on_partial(self, capture: Capture, transcript: Transcript) -> None:
        """A partial transcript of `capture`'s turn (on the loop): the turn detector reads it
        while that turn is still being captured."""
        text = transcript.text.strip()
        if not text or text == capture.last_partial:
            return
        capture.last_partial = text
        # A fast session decides turn ends on the audio clock: only partials that a flushable
        # stream delivered for the audio up to the frame being decided may steer them.
        if self._capture is capture and (capture.flushable or not self.lockstep):
            self._turn_detector.on_partial(text)
        self.bus.emit(EventType.PARTIAL_TRANSCRIPT, turn=capture.index, provider=transcript.provider, text=text)

    async def respond(self, turn: TurnResult, work: Coroutine[Any, Any, None]) -> bool:
        """Speak a reply (`work` writes it to the sink); False when its stage failed entirely."""
        exc = await self._player.play(turn, work)
        if exc is None:
            return True
        self.stage_failed("s2s" if self.plan.pipeline == "s2s" else "tts", exc, turn)
        return False

    def forget_turn(self, turn: TurnResult) -> None:
        """A turn that turned out to hold no words is not part of the result."""
        self._turns.remove(turn)

    def stage_failed(self, stage: str, exc: ProviderError, turn: TurnResult) -> None:
        """Every provider of `stage` failed for `turn`: record and report the error."""
        exc.with_context(route=self.plan.route, session_id=self.plan.session_id)
        message = redact(str(exc))
        turn.error = message
        self._errors.append(SessionError(message, stage=stage, error_type=type(exc).__name__, turn=turn.index))
        self.bus.emit(
            EventType.ERROR, turn=turn.index, provider=exc.provider, message=message, stage=stage,
            error_type=type(exc).__name__,
        )

def _names(stage: StagePlan | None) -> list[str] | None:
    return list(stage.providers) if stage is not None else None


def _no_stage(stage: str, route: str) -> ConfigError:
    return ConfigError(
        f"route {route!r} has no {stage} providers", hint=f"add `{stage}: [...]` to the route or to defaults"
    )


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
