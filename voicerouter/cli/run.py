"""`voicerouter run`: a live session on the microphone and speaker, turn after turn, until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from voicerouter.audio.devices import MicSource, SpeakerSink
    from voicerouter.routing.plan import SessionPlan
    from voicerouter.session.results import SessionResult


def run(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant id.")] = None,
    region: Annotated[str | None, typer.Option("--region", "-r", help="Region, e.g. eu-west-1.")] = None,
    flag: Annotated[list[str] | None, typer.Option("--flag", help="Feature flag: NAME or NAME=true|false (repeatable).")] = None,
    session_id: Annotated[str | None, typer.Option("--session-id", "-s", help="Session id (decides sticky A/B splits).")] = None,
    routes: Annotated[Path | None, typer.Option("--routes", help="Routing table (default: $VOICEROUTER_ROUTES, then ./routes.yaml, then the built-in offline table).")] = None,
    input_device: Annotated[str | None, typer.Option("--input-device", help="Microphone: index or part of the name (see `voicerouter devices`).")] = None,
    output_device: Annotated[str | None, typer.Option("--output-device", help="Speaker: index or part of the name (see `voicerouter devices`).")] = None,
    duration: Annotated[float | None, typer.Option("--duration", help="Stop after this many seconds (default: run until Ctrl-C).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print events as JSON lines on stdout instead of the live view.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write mic.wav, replies.wav, conversation.wav (stereo), events.jsonl and session.json here.")] = None,
    inject: Annotated[str | None, typer.Option("--inject", help="Inject faults, e.g. local-stt=error:503@0.5,local-tts=slow:300ms.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for fault injection (default: the table's seed).")] = None,
) -> None:
    """Talk to the routed pipeline live: microphone in, replies on the speaker, until Ctrl-C or --duration."""
    import asyncio

    from voicerouter.cli.common import parse_flags, routes_or_builtin, warn_unused_flags
    from voicerouter.errors import UsageError
    from voicerouter.routing.plan import RouteContext

    if duration is not None and duration <= 0:
        raise UsageError(f"--duration must be positive, got {duration:g}")
    table = routes_or_builtin(routes)
    kwargs = {"session_id": session_id} if session_id else {}
    ctx = RouteContext(tenant=tenant, region=region, flags=parse_flags(flag), **kwargs)
    warn_unused_flags(table.flag_names(), ctx.flags, table.file)
    plan = table.resolve(ctx)
    from voicerouter.session.replay import faults_for

    faults = faults_for(table, inject, seed)
    try:
        code = asyncio.run(
            live_session(
                plan, table, input_device=input_device, output_device=output_device, duration=duration,
                json_out=json_out, out=out, faults=faults,
            )
        )
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None  # a second Ctrl-C: give up at once
    if code:
        raise typer.Exit(code)


async def live_session(
    plan: SessionPlan,
    table: Any,
    *,
    input_device: str | None = None,
    output_device: str | None = None,
    duration: float | None = None,
    json_out: bool = False,
    out: Path | None = None,
    faults: Any = None,
) -> int:
    """Run one live session; returns the exit code. Device problems raise `AudioError`."""
    import contextlib
    import os
    import sys

    from voicerouter.audio.devices import MicSource, SpeakerSink, find_device, list_devices
    from voicerouter.cli.common import stderr_console
    from voicerouter.providers.base import BuildContext
    from voicerouter.providers.pool import ProviderPool
    from voicerouter.session.events import EventBus, JsonlWriter
    from voicerouter.session.session import Session

    ctx = plan.context
    err = stderr_console()
    record = out is not None

    # Devices first: a wrong name or a missing microphone fails before any model is loaded.
    devices = list_devices()
    mic_device = find_device(input_device, "input", devices)
    speaker_device = find_device(output_device, "output", devices)
    mic = MicSource(mic_device, frame_ms=plan.vad.frame_ms, record=record)
    speaker = SpeakerSink(speaker_device, record=record)

    env = dict(os.environ)
    pool = ProviderPool(table.config.providers, BuildContext(env=env))
    files: list[str] = []
    events_file = None
    result: SessionResult | None = None
    try:
        names = list(dict.fromkeys(n for stage in plan.stages() for n in stage.providers))
        pool.check_secrets(names)
        # Load the heavy engines before the microphone opens, so the first turn is not slow.
        with err.status("loading speech engines…", spinner="dots") if not json_out else contextlib.nullcontext():
            await pool.preload(names)
        # The session clock starts now, after loading: `t` in events and --duration count from here.
        bus = EventBus(plan.session_id, tenant=ctx.tenant, region=ctx.region, route=plan.route)
        mic.bus = speaker.bus = bus
        if out is not None:
            events_file = _open_events(out)
            bus.subscribe(JsonlWriter(events_file))
        if json_out:
            bus.subscribe(JsonlWriter(sys.stdout))
        session = Session(plan, pool, mic, speaker, bus=bus, faults=faults, env=env)
        speaker.open()
        mic.open()
        if json_out:
            result = await _run_until_stopped(session, duration, None)
        else:
            result = await _run_with_view(session, plan, mic, speaker, duration)
    finally:
        mic.bus = speaker.bus = None  # the session has ended: no events after session_end
        await mic.aclose()
        await speaker.aclose()
        try:
            await pool.aclose()
        finally:
            if events_file is not None:
                events_file.close()
                files.append(str(out / "events.jsonl"))  # type: ignore[operator]
            if out is not None:
                files += _write_recordings(out, mic, speaker, result)

    from voicerouter.cli.live_view import render_summary

    render_summary(result, err, dropped=mic.blocks_dropped, out_files=files)
    return result.exit_code


async def _run_with_view(
    session: Any, plan: SessionPlan, mic: MicSource, speaker: SpeakerSink, duration: float | None
) -> SessionResult:
    from rich.live import Live

    from voicerouter.cli.common import stdout_console
    from voicerouter.cli.live_view import LiveView

    view = LiveView(plan, mic=mic.device.label(), speaker=speaker.device.label(), duration_s=duration)
    session.bus.subscribe(view)
    with Live(view, console=stdout_console(), refresh_per_second=10, transient=False):
        return await _run_until_stopped(session, duration, view)


async def _run_until_stopped(session: Any, duration: float | None, view: Any) -> SessionResult:
    """Run the session until it ends, `duration` passes or Ctrl-C (a second Ctrl-C aborts)."""
    import asyncio
    import contextlib
    import signal

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    stopping = False
    stopper: list[asyncio.Task[Any]] = []  # keep a reference: the loop holds tasks only weakly

    def request_stop() -> None:
        nonlocal stopping
        if stopping:
            if main is not None:
                main.cancel()
            return
        stopping = True
        if view is not None:
            view.stopping()
        stopper.append(loop.create_task(session.stop()))

    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # Windows, other threads
            loop.add_signal_handler(sig, request_stop)
            handled.append(sig)
    timer = loop.call_later(duration, request_stop) if duration is not None else None
    try:
        return await session.run()
    finally:
        if timer is not None:
            timer.cancel()
        for sig in handled:
            loop.remove_signal_handler(sig)


def _open_events(out: Path) -> Any:
    from voicerouter.errors import VoiceRouterError

    path = out / "events.jsonl"
    try:
        out.mkdir(parents=True, exist_ok=True)
        return path.open("w", encoding="utf-8")
    except OSError as exc:
        raise VoiceRouterError(
            f"{path}: cannot write the event log ({exc.strerror or exc})",
            hint="check that --out points to a writable directory",
        ) from None


def _write_recordings(out: Path, mic: MicSource, speaker: SpeakerSink, result: SessionResult | None) -> list[str]:
    """mic.wav (what the microphone heard, 16 kHz), replies.wav (what the speaker played, silence
    included, at its rate) and conversation.wav (both at 16 kHz: mic left, speaker right)."""
    import json

    import numpy as np
    import soundfile as sf

    from voicerouter.audio.convert import resample
    from voicerouter.audio.io import write_wav

    heard = bytes(mic.recorded or b"")
    played = speaker.recorded_pcm()
    written = [
        str(write_wav(out / "mic.wav", heard, mic.sample_rate)),
        str(write_wav(out / "replies.wav", played, speaker.device_rate)),
    ]
    left = np.frombuffer(heard, dtype="<i2")
    right = np.frombuffer(resample(played, speaker.device_rate, mic.sample_rate), dtype="<i2")
    both = np.zeros((max(left.size, right.size), 2), dtype=np.int16)
    both[: left.size, 0] = left
    both[: right.size, 1] = right
    path = out / "conversation.wav"
    try:
        sf.write(str(path), both, mic.sample_rate, subtype="PCM_16")
    except (OSError, sf.SoundFileError) as exc:
        from voicerouter.errors import AudioFileError

        raise AudioFileError(f"{path}: cannot write WAV file ({exc})", hint="check that --out is writable") from None
    written.append(str(path))
    if result is not None:
        path = out / "session.json"
        path.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        written.append(str(path))
    return written


def register(app: typer.Typer) -> None:
    app.command("run")(run)
