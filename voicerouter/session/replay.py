"""Replay audio files through real sessions: the library behind `voicerouter replay`.

Each file gets its own session (and session id) on the route the context resolves to; files run
`concurrency` at a time and share one provider pool, so clients and loaded models are reused.
A file that cannot be read becomes an error entry; the other files still run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicerouter.config.secrets import redact
from voicerouter.errors import EXIT_FAILED, EXIT_OK, EXIT_PROVIDER, AudioFileError, CapacityError, VoiceRouterError
from voicerouter.providers.base import AudioChunk, BuildContext
from voicerouter.routing.plan import RouteContext, SessionPlan
from voicerouter.session.events import EventBus, JsonlWriter
from voicerouter.session.results import SessionResult

if TYPE_CHECKING:
    from voicerouter.audio.sink import AudioSink


@dataclass
class ReplayResult:
    """The outcome of one file: its session's result, or why it could not run."""

    file: str
    route: str | None = None
    session_id: str | None = None
    plan: SessionPlan | None = None
    session: SessionResult | None = None
    error: str | None = None
    error_type: str | None = None
    error_stage: str | None = None  # input (unreadable file) or admission (no capacity)
    exit_code: int = EXIT_OK
    audio_s: float = 0.0  # length of the input audio
    wall_s: float = 0.0  # time the replay took
    input_pcm: bytes = field(default=b"", repr=False)  # 16 kHz mono, for timelines
    reply_wav: str | None = None
    events_jsonl: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        session = self.session
        out: dict[str, Any] = {
            "file": self.file,
            "ok": self.ok,
            "route": self.route,
            "session_id": self.session_id,
            "pipeline": self.plan.pipeline if self.plan else None,
            "providers": session.providers if session else None,
            "turns": [t.to_dict() for t in session.turns] if session else [],
            "errors": [e.to_dict() for e in session.errors] if session else [],
            "exit_code": self.exit_code,
            "audio_s": round(self.audio_s, 3),
            "wall_s": round(self.wall_s, 3),
        }
        if self.error is not None:
            out["errors"].insert(
                0, {"message": self.error, "stage": self.error_stage, "error_type": self.error_type, "turn": None}
            )
        if session is not None:
            out["reason"] = session.reason
        if self.reply_wav:
            out["reply_wav"] = self.reply_wav
        if self.events_jsonl:
            out["events_jsonl"] = self.events_jsonl
        return out


ProgressCallback = Callable[[ReplayResult], None]


async def replay_files(
    paths: list[str | os.PathLike[str]],
    ctx: RouteContext,
    table: Any,
    *,
    realtime: bool = False,
    concurrency: int = 1,
    out_dir: str | os.PathLike[str] | None = None,
    faults: Any = None,
    on_progress: ProgressCallback | None = None,
    env: Mapping[str, str] | None = None,
    preload: bool = True,
    agent_factory: Callable[[SessionPlan], Any] | None = None,
    seed: int | None = None,
    state_url: str | None = None,
    on_event: Callable[[str, Any], None] | None = None,
    keys: list[tuple[float | None, str]] | None = None,
) -> list[ReplayResult]:
    """Replay every file through its own session; results come back in the order of `paths`.

    With several files, session ids are `<ctx.session_id>-<n>` so sticky splits stay reproducible.
    `out_dir` receives `<stem>.reply.wav` (the spoken replies) and `<stem>.events.jsonl` per file.
    `preload` loads local engines (models) first, so the first turn's latency is not a model load.
    `agent_factory(plan)` replaces the plan's agent with your own object (one per session).
    `faults` takes the CLI's `--inject` string (`"dg=error:503@0.3,local-tts=slow:300ms"`, added to
    the table's `faults:` and seeded by `seed`) or a parsed fault plan.
    `state_url` (a redis:// URL) shares limits and breakers with a fleet, like the table's `state:`.
    `on_event(file, event)` sees every session event as it happens (live output of `--realtime`).
    `keys` are keypad (DTMF) groups pressed in every file, `[(seconds or None for after the audio, "1#")]`.
    Errors other than unreadable files (missing secrets, capacity, bad routes) are raised.
    """
    from voicerouter import fleet

    if concurrency < 1:
        raise VoiceRouterError(f"concurrency must be at least 1, got {concurrency}")
    if isinstance(faults, str):
        faults = faults_for(table, faults, seed)
    env = dict(os.environ if env is None else env)
    out = Path(out_dir) if out_dir is not None else None
    stems = output_stems([Path(p) for p in paths])
    jobs = []
    for index, path in enumerate(paths):
        file_ctx = ctx if len(paths) == 1 else dataclasses.replace(ctx, session_id=f"{ctx.session_id}-{index + 1}")
        jobs.append((os.fspath(path), table.resolve(file_ctx), stems[index]))
    async with fleet.shared_state(table.config.state, env, state_url):
        return await _replay_jobs(jobs, table, env, realtime=realtime, concurrency=concurrency, out=out,
                                  faults=faults, on_progress=on_progress, preload=preload,
                                  agent_factory=agent_factory, on_event=on_event, keys=keys)


async def _replay_jobs(
    jobs: list[tuple[str, SessionPlan, str]], table: Any, env: dict[str, str], *, realtime: bool, concurrency: int,
    out: Path | None, faults: Any, on_progress: ProgressCallback | None, preload: bool,
    agent_factory: Callable[[SessionPlan], Any] | None, on_event: Callable[[str, Any], None] | None = None,
    keys: list[tuple[float | None, str]] | None = None,
) -> list[ReplayResult]:
    from voicerouter.providers.pool import ProviderPool

    pool = ProviderPool(table.config.providers, BuildContext(env=env))
    try:
        # A missing key fails the whole run before any audio is read, not file by file.
        pool.check_secrets(dict.fromkeys(n for _, plan, _ in jobs for s in plan.stages() for n in s.providers))
        if preload:
            await pool.preload(n for _, plan, _ in jobs for s in plan.stages() for n in s.providers)
        gate = asyncio.Semaphore(concurrency)

        async def one(path: str, plan: SessionPlan, stem: str) -> ReplayResult:
            async with gate:
                agent = agent_factory(plan) if agent_factory is not None else None
                result = await replay_one(path, plan, pool, realtime=realtime, out_dir=out, stem=stem,
                                          faults=faults, env=env, agent=agent, on_event=on_event, keys=keys)
            if on_progress is not None:
                on_progress(result)
            return result

        tasks = [asyncio.create_task(one(*job)) for job in jobs]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # One file raised (a bug, an unwritable --out): stop the others, raise that error as is.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    finally:
        await pool.aclose()


async def replay_one(
    path: str,
    plan: SessionPlan,
    pool: Any,
    *,
    realtime: bool = False,
    out_dir: Path | None = None,
    stem: str | None = None,
    faults: Any = None,
    env: Mapping[str, str] | None = None,
    agent: Any = None,
    on_event: Callable[[str, Any], None] | None = None,
    keys: list[tuple[float | None, str]] | None = None,
) -> ReplayResult:
    """One file through one session of `plan` (the pool is the caller's); `keys` are keypad groups
    (`(seconds into the audio or None for after it, "1#")`) pressed as the audio plays."""
    from voicerouter.audio.sink import MemorySink, WavSink
    from voicerouter.audio.source import FileSource
    from voicerouter.session.keypad import KeyedSource, key_schedule
    from voicerouter.session.session import Session

    result = ReplayResult(file=path, route=plan.route, session_id=plan.session_id, plan=plan)
    started = time.perf_counter()
    try:
        source = await asyncio.to_thread(FileSource, path, plan.vad.frame_ms, realtime)
    except AudioFileError as exc:
        result.error, result.error_type, result.exit_code = redact(str(exc)), type(exc).__name__, EXIT_FAILED
        result.error_stage = "input"
        result.wall_s = time.perf_counter() - started
        return result
    result.audio_s = source.duration_s
    ctx = plan.context
    bus = EventBus(plan.session_id, tenant=ctx.tenant, region=ctx.region, route=plan.route)
    stem = stem or Path(path).stem
    if out_dir is not None:
        sink: Any = WavSink(out_dir / f"{stem}.reply.wav")
        result.reply_wav = os.fspath(sink.path)
    else:
        sink = MemorySink(22050)
    if realtime:
        sink = PacedSink(sink)
    with ExitStack() as stack:
        if out_dir is not None:
            events_path = out_dir / f"{stem}.events.jsonl"
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
                stream = stack.enter_context(events_path.open("w", encoding="utf-8"))
            except OSError as exc:
                raise VoiceRouterError(
                    f"{events_path}: cannot write the event log ({exc.strerror or exc})",
                    hint="check that --out points to a writable directory",
                ) from None
            bus.subscribe(JsonlWriter(stream))
            result.events_jsonl = os.fspath(events_path)
        if on_event is not None:
            bus.subscribe(lambda event: on_event(path, event))
        if keys:
            source = KeyedSource(source, key_schedule(keys, source.duration_s))
        session = Session(plan, pool, source, sink, bus=bus, faults=faults, env=env, agent=agent)
        if isinstance(source, KeyedSource):
            source.press = session.press
        try:
            result.session = await session.run()
        except CapacityError as exc:
            # The route or a stage is full: this file is refused, the others may still get a slot.
            result.error, result.error_type, result.exit_code = redact(str(exc)), type(exc).__name__, exc.exit_code
            result.error_stage = "admission"
            result.wall_s = time.perf_counter() - started
            return result
        finally:
            result.input_pcm = source.pcm  # what the session heard (the start of it, for timelines)
            await sink.aclose()
    result.exit_code = result.session.exit_code if result.session.exit_code else EXIT_OK
    if result.exit_code == EXIT_OK and result.session.errors:
        result.exit_code = EXIT_FAILED
    result.wall_s = time.perf_counter() - started
    return result


class PacedSink:
    """Plays into another sink at real-time pace: `drain()` returns when the audio would have
    finished playing, and `clear()` cuts it off. A real-time replay uses it so a reply is "playing"
    exactly as long as it would on a speaker, which is what barge-in and half duplex look at."""

    def __init__(self, inner: AudioSink) -> None:
        self.inner = inner
        self._ends_at = 0.0  # loop time when the audio written so far has played
        self._kept_s = 0.0  # seconds written and not cleared

    def __getattr__(self, name: str) -> Any:  # path, pcm, clears, ... of the wrapped sink
        return getattr(self.inner, name)

    def _unplayed_s(self) -> float:
        return max(0.0, self._ends_at - asyncio.get_running_loop().time())

    @property
    def played_s(self) -> float:
        return max(0.0, self._kept_s - self._unplayed_s())

    async def write(self, chunk: AudioChunk) -> None:
        now = asyncio.get_running_loop().time()
        self._ends_at = max(self._ends_at, now) + chunk.duration_s
        self._kept_s += chunk.duration_s
        await self.inner.write(chunk)

    async def drain(self) -> None:
        delay = self._ends_at - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.inner.drain()

    def clear(self) -> None:
        self._kept_s -= self._unplayed_s()
        self._ends_at = 0.0
        self.inner.clear()

    async def aclose(self) -> None:
        await self.inner.aclose()


def faults_for(table: Any, inject: str | None, seed: int | None) -> Any:
    """The table's `faults:` plus `--inject` entries, seeded by `--seed` or the table's `seed`."""
    from voicerouter.resilience import parse_faults

    entries: list[Any] = list(getattr(table.config, "faults", []) or [])
    if inject:
        entries.extend(part.strip() for part in inject.split(",") if part.strip())
    if not entries:
        return None
    plan = parse_faults(entries, seed if seed is not None else getattr(table.config, "seed", None))
    plan.check(table.config.providers)  # a typo in a provider name must not silently inject nothing
    return plan


def exit_code(results: list[ReplayResult]) -> int:
    """3 when providers were down for any file, else 1 when any file failed, else 0."""
    codes = {r.exit_code for r in results}
    if EXIT_PROVIDER in codes:
        return EXIT_PROVIDER
    return EXIT_FAILED if codes - {EXIT_OK} else EXIT_OK


def output_stems(paths: list[Path]) -> list[str]:
    # Two inputs named alike (a/x.wav, b/x.wav) must not overwrite each other's outputs.
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        count = seen.get(path.stem, 0)
        seen[path.stem] = count + 1
        stems.append(path.stem if count == 0 else f"{path.stem}-{count + 1}")
    return stems
