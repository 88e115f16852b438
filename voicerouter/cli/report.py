"""`voicerouter report`: latency percentiles, failovers and errors from event logs, and timeline pictures."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class GroupBy(StrEnum):
    route = "route"
    provider = "provider"
    tenant = "tenant"


MAX_SKIPPED_SHOWN = 5


def report(
    logs: Annotated[list[Path], typer.Argument(help="Event logs (JSONL) or directories of them.", show_default=False)],
    by: Annotated[GroupBy | None, typer.Option("--by", help="Group the figures by route, provider or tenant.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON (shape in voicerouter.observe.report).")] = False,
    timeline: Annotated[Path | None, typer.Option("--timeline", help="Write one timeline PNG per session into this directory.")] = None,
    text_timeline: Annotated[bool, typer.Option("--text-timeline", help="Print a text timeline of each session.")] = False,
    turns: Annotated[bool, typer.Option("--turns", help="Also list every turn.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on the first bad log line instead of skipping it.")] = False,
    otel: Annotated[bool, typer.Option("--otel", help="Also send the sessions' spans to the OpenTelemetry exporter set by OTEL_*.")] = False,
) -> None:
    """Report turns, voice-to-voice latency (p50/p90/p99), failovers, retries and errors from event logs."""
    from voicerouter.cli.common import stderr_console, stdout_console
    from voicerouter.errors import UsageError
    from voicerouter.observe.logs import read_events
    from voicerouter.observe.report import build_report, render_report

    log = read_events(logs, strict=strict)
    err = stderr_console()
    if log.skipped:
        err.print(f"[yellow]warning:[/] skipped {len(log.skipped)} bad line(s) (use --strict to stop on them):", markup=True)
        for skipped in log.skipped[:MAX_SKIPPED_SHOWN]:
            err.print(f"  {skipped}", markup=False)
        if len(log.skipped) > MAX_SKIPPED_SHOWN:
            err.print(f"  ... and {len(log.skipped) - MAX_SKIPPED_SHOWN} more", markup=False)
    if not log.events:
        raise UsageError("no events in " + ", ".join(str(p) for p in log.files), hint="is this an event log?")

    result = build_report(log, by.value if by else None)
    if json_out:
        import json

        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        render_report(result, stdout_console(), show_turns=turns)
    if text_timeline:
        from voicerouter.observe.timeline_text import render_timeline_text

        # to stderr with --json, so stdout stays parseable; never re-wrapped to the terminal width
        typer.echo(("" if json_out else "\n") + render_timeline_text(log.events), err=json_out)
    if timeline is not None:
        from voicerouter.observe.timeline_png import audio_from_logs, write_timelines

        warn = lambda message: err.print(f"warning: {message}", markup=False)  # noqa: E731
        paths = write_timelines(log.events, timeline, audio=audio_from_logs(log.session_files, warn=warn))
        for path in paths:
            err.print(f"timeline: {path}", markup=False)
    if otel:
        _export_traces(log.events)


def _export_traces(events: list[dict]) -> None:
    from voicerouter.errors import UsageError
    from voicerouter.observe import otel

    if not otel.tracing_configured():
        raise UsageError(
            "--otel needs an exporter", hint="set OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_TRACES_EXPORTER=console)"
        )
    if not otel.otel_installed():
        raise UsageError(f"--otel needs OpenTelemetry: {otel.INSTALL_HINT}")
    provider = otel.default_tracer_provider()
    otel.export_events(events, provider)
    flush = getattr(provider, "force_flush", None)
    if callable(flush):
        flush()


def register(app: typer.Typer) -> None:
    app.command("report")(report)
