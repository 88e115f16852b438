"""`voicerouter replay`: run audio files through routed sessions; print turns, check expectations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def replay(
    files: Annotated[list[Path], typer.Argument(help="Audio files (WAV, FLAC, OGG; any rate and channel count).")],
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant id.")] = None,
    region: Annotated[str | None, typer.Option("--region", "-r", help="Region, e.g. eu-west-1.")] = None,
    flag: Annotated[list[str] | None, typer.Option("--flag", help="Feature flag: NAME or NAME=true|false (repeatable).")] = None,
    session_id: Annotated[str | None, typer.Option("--session-id", "-s", help="Session id (decides sticky A/B splits); with several files each gets ID-1, ID-2, ... Default: replay-SEED when a seed is set, else random.")] = None,
    routes: Annotated[Path | None, typer.Option("--routes", help="Routing table (default: $VOICEROUTER_ROUTES, then ./routes.yaml, then the built-in offline table).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write <stem>.reply.wav and <stem>.events.jsonl per file here.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-j", help="Files replayed at the same time.")] = 1,
    realtime: Annotated[bool, typer.Option("--realtime", help="Feed audio at real-time pace (barge-in and timing as live).")] = False,
    expect: Annotated[Path | None, typer.Option("--expect", help="Expectations YAML (turns, words, max_latency_ms per file or glob).")] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write the expectation checks as JUnit XML.")] = None,
    inject: Annotated[str | None, typer.Option("--inject", help="Inject faults, e.g. local-stt=error:503@0.5,local-tts=slow:300ms.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for fault injection and the default session id (default: the table's seed).")] = None,
    state: Annotated[str | None, typer.Option("--state", metavar="URL", help="Share limits and breakers with a fleet through Redis (redis://...), as serve --state does.")] = None,
    timeline: Annotated[Path | None, typer.Option("--timeline", help="Draw <stem>.timeline.png per file here (needs matplotlib).")] = None,
    dtmf: Annotated[list[str] | None, typer.Option("--dtmf", help="Keys pressed on the keypad in each file, KEYS[@SECONDS] (e.g. 12#@3.5: from 3.5 s into the audio, 0.25 s apart; without @, after the audio). Repeatable.")] = None,
    emulate: Annotated[bool, typer.Option("--emulate", help="Point the table's cloud providers at local emulators (offline, no keys; emulated STT transcribes with PocketSphinx).")] = False,
) -> None:
    """Replay audio files through the routed pipeline: transcripts, replies, latencies, failovers."""
    import asyncio
    import json
    import time

    from voicerouter.cli.common import (
        check_writable,
        note,
        parse_flags,
        print_error,
        routes_or_builtin,
        stderr_console,
        stdout_console,
        warn_unused_flags,
    )
    from voicerouter.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError, VoiceRouterError
    from voicerouter.routing.plan import RouteContext
    from voicerouter.session.console import render_checks, render_file, render_replay, render_summary, replay_progress
    from voicerouter.session.replay import exit_code, faults_for, output_stems, replay_files
    from voicerouter.shutdown import exit_process

    if not files:
        raise UsageError("no audio files given", hint="e.g. voicerouter replay samples/*.wav")
    if concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {concurrency}")
    from voicerouter.session.keypad import parse_dtmf

    try:
        keys = [parse_dtmf(spec) for spec in dtmf or []]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if junit is not None and expect is None:
        raise UsageError("--junit needs --expect", hint="the JUnit report lists the expectation checks")
    if timeline is not None:
        _check_timeline_support()
    table = routes_or_builtin(routes)
    expectations = None
    if expect is not None:
        from voicerouter.session.expectations import load_expectations

        expectations = load_expectations(expect)
    if session_id is None:
        # Same seed, same session ids, so weighted splits pick the same providers on every run.
        table_seed = seed if seed is not None else getattr(table.config, "seed", None)
        session_id = f"replay-{table_seed}" if table_seed is not None else None
    kwargs = {"session_id": session_id} if session_id else {}
    ctx = RouteContext(tenant=tenant, region=region, flags=parse_flags(flag), **kwargs)
    warn_unused_flags(table.flag_names(), ctx.flags, table.file)
    faults = faults_for(table, inject, seed)
    for path, what in ((junit, "--junit"), (out, "--out"), (timeline, "--timeline")):
        if path is not None:  # before the run: a typo must not cost a long replay its report
            check_writable(path, what, directory=what != "--junit")

    started = time.perf_counter()
    from voicerouter.cli.output import quiet

    # Several files: each file's result is printed as it finishes (as pytest does), the bar shows an ETA.
    streaming = not json_out and len(files) > 1
    finished: list = []
    console = stdout_console()

    live = _live_turns(stderr_console(), several=len(files) > 1) if realtime and not quiet() else None

    with replay_progress(len(files), stderr_console(), enabled=not quiet()) as advance:

        def on_progress(result) -> None:
            finished.append(result)
            if streaming:
                if len(finished) > 1:
                    console.print()
                render_file(result, console)
            advance(result)

        async def run_all() -> list:
            if not emulate:
                return await replay_files(
                    list(files), ctx, table, realtime=realtime, concurrency=concurrency, out_dir=out,
                    faults=faults, on_progress=on_progress, state_url=state, on_event=live, keys=keys,
                )
            import dataclasses
            import os

            from voicerouter.testing.emulated import emulated_table, plan_providers

            plans = [table.resolve(dataclasses.replace(ctx, session_id=f"{ctx.session_id}-{i}")) for i in range(len(files))]
            async with emulated_table(table, plan_providers(plans)) as (emulated, env, urls):
                for name, url in urls.items():
                    note(f"[dim]emulating {name} at {url}[/]")
                return await replay_files(
                    list(files), ctx, emulated, realtime=realtime, concurrency=concurrency, out_dir=out,
                    faults=faults, on_progress=on_progress, state_url=state, env={**os.environ, **env}, on_event=live,
                    keys=keys,
                )

        try:
            results = asyncio.run(run_all())
        except KeyboardInterrupt:
            _interrupted(finished, len(files), json_out)
            exit_process(EXIT_INTERRUPTED)
    elapsed = time.perf_counter() - started

    checks = []
    if expectations is not None:
        from voicerouter.session.expectations import check_results

        checks = check_results(expectations, results)

    if json_out:
        doc: dict = {"ok": all(r.ok for r in results), "sessions": [r.to_dict() for r in results]}
        if expectations is not None:
            doc["expectations"] = {
                "passed": all(c.passed for c in checks),
                "checks": [{"file": c.file, "name": c.name, "passed": c.passed, "message": c.message} for c in checks],
            }
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        if streaming:
            render_summary(results, console)
        else:
            render_replay(results, console)
        if expectations is not None:
            console.print()
            render_checks(checks, console, unused=expectations.unused([r.file for r in results]))
        if out is not None and not quiet():
            console.print(f"[dim]replies and event logs written to {out}[/]")

    _note_slow_local_engines(results, table)
    code = exit_code(results)
    if code == EXIT_OK and any(not c.passed for c in checks):
        code = EXIT_FAILED
    # Written after the results are printed: a file that cannot be written loses only itself.
    try:
        if junit is not None:
            from voicerouter.session.junit import write_junit

            write_junit(junit, checks, time_s=elapsed)
        if timeline is not None:
            from voicerouter.observe.timeline_png import render_timeline_png

            for result, stem in zip(results, output_stems([Path(f) for f in files]), strict=True):
                if result.session is not None:
                    events = [e.to_dict() for e in result.session.events]
                    render_timeline_png(events, result.input_pcm, 16000, timeline / f"{stem}.timeline.png")
            if not quiet() and not json_out:
                console.print(f"[dim]timelines written to {timeline}[/]")
    except VoiceRouterError as exc:
        print_error(exc)
        code = code or exc.exit_code
    if code != EXIT_OK:
        raise typer.Exit(code)


def _live_turns(console, *, several: bool):
    """--realtime: each turn's transcript and reply on stderr as they happen (the result follows)."""
    from rich.markup import escape

    def show(file: str, event) -> None:
        prefix = f"[dim]{escape(Path(file).name)}[/] " if several else ""
        if event.type == "final_transcript":
            console.print(f"{prefix}[bold]turn {event.turn}[/]  you    \"{escape(event.data.get('text') or '')}\"")
        elif event.type == "agent_reply":
            console.print(f"{prefix}[bold]turn {event.turn}[/]  reply  \"{escape(event.data.get('text') or '')}\"")
        elif event.type in ("failover", "error"):
            from voicerouter.observe.timeline_text import incident_line

            console.print(f"{prefix}[yellow]{escape(incident_line(event.to_dict()) or event.type)}[/]")

    return show


def _note_slow_local_engines(results: list, table) -> None:
    """Once per engine: a local engine that timed out is slow on this machine, not down (stderr)."""
    from voicerouter.cli.common import note
    from voicerouter.providers.registry import get_type

    counts: dict[str, int] = {}
    for result in results:
        events = result.session.events if result.session else []
        injected = {(e.provider, e.turn) for e in events if e.type == "fault_injected"}  # those were asked for
        for event in events:
            if (event.type in ("failover", "retry") and event.data.get("reason") == "timeout" and event.provider
                    and (event.provider, event.turn) not in injected):
                counts[event.provider] = counts.get(event.provider, 0) + 1
    for name, count in counts.items():
        cfg = table.config.providers.get(name)
        ptype = get_type(cfg.type) if cfg is not None else None
        if ptype is not None and ptype.local:
            note(f"[yellow]note:[/] the local engine {name!r} ({cfg.type}) missed its deadline {count} time(s): it runs "
                 "on this machine's CPU, so it was slow here, not down; give local engines more time with "
                 "resilience.first_result_timeout_ms (the built-in offline table uses 15000)")


def _interrupted(finished: list, total: int, json_out: bool) -> None:
    """Ctrl-C: what finished is not lost (printed already as text; as JSON now)."""
    import json
    import sys

    if json_out:
        typer.echo(json.dumps({"ok": False, "interrupted": True, "sessions": [r.to_dict() for r in finished]},
                              indent=2, ensure_ascii=False))
    print(f"interrupted: {len(finished)} of {total} file(s) finished"
          + (": " + ", ".join(r.file for r in finished) if finished else ""), file=sys.stderr)


def _check_timeline_support() -> None:
    from voicerouter.errors import UsageError

    try:
        import matplotlib  # noqa: F401

        import voicerouter.observe.timeline_png  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"--timeline needs {exc.name or 'matplotlib'}, which is not installed",
            hint="pip install 'voicerouter[plot]'",
        ) from None


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)
