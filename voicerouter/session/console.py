"""Rich rendering of replay results, expectation checks and multi-file progress for the terminal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from voicerouter.session.events import EventType

if TYPE_CHECKING:
    from voicerouter.session.expectations import Check
    from voicerouter.session.replay import ReplayResult
    from voicerouter.session.results import TurnResult

# Events worth a line of their own under the turn they happened in.
INCIDENTS = {
    EventType.FAILOVER, EventType.RETRY, EventType.HEDGE, EventType.BREAKER, EventType.ERROR,
    EventType.REFUSED, EventType.BARGE_IN, EventType.WARNING, EventType.FAULT_INJECTED,
}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def render_replay(results: list[ReplayResult], console: Console) -> None:
    for index, result in enumerate(results):
        if index:
            console.print()
        render_file(result, console)
    render_summary(results, console)


def render_summary(results: list[ReplayResult], console: Console) -> None:
    """The verdict line of a multi-file run."""
    if len(results) > 1:
        turns = sum(len(r.session.turns) for r in results if r.session)
        failed = sum(1 for r in results if not r.ok)
        verdict = f"[red]{failed} failed[/]" if failed else "[green]all ok[/]"
        console.print(f"\n{len(results)} files, {turns} turns: {verdict}")


def render_file(result: ReplayResult, console: Console) -> None:
    name = escape(result.file)
    if result.session is None:
        console.print(f"[bold]{name}[/]  [red]✗ {escape(result.error or 'failed')}[/]")
        return
    session = result.session
    stages = "  ".join(
        f"{stage} [cyan]{escape(' → '.join(names))}[/]" for stage, names in session.providers.items()
    )
    console.print(
        f"[bold]{name}[/]  route [green]{escape(result.route or '?')}[/] ({session.pipeline})  {stages}"
    )
    console.print(
        f"  [dim]session {escape(session.session_id)} · {result.audio_s:.1f} s of audio in {result.wall_s:.1f} s"
        f" · {len(session.turns)} turn(s)[/]"
    )
    incidents = _incidents(result)
    for line in incidents.pop(None, []):
        console.print(f"  {line}")
    for turn in session.turns:
        _render_turn(turn, console)
        for line in incidents.pop(turn.index, []):
            console.print(f"    {line}")
    if not session.turns:
        console.print("  [yellow]no turns: no speech was detected[/]")
    for lines in incidents.values():  # incidents of turns that were dropped (noise)
        for line in lines:
            console.print(f"  {line}")
    if session.turns:
        console.print(_latency_table(session.turns))
    if session.reason != "end_of_audio":
        console.print(f"  [red]session ended: {escape(session.reason)}[/]")


def _render_turn(turn: TurnResult, console: Console) -> None:
    flags = " [yellow](interrupted by barge-in)[/]" if turn.interrupted else ""
    console.print(
        f"  [bold]turn {turn.index}[/]  {turn.start_s:.2f}–{turn.end_s:.2f} s [dim]({escape(turn.reason or '?')})[/]{flags}"
    )
    transcript = "[red]-[/]" if turn.transcript is None else f'"{escape(turn.transcript)}"'
    console.print(f"    you    {transcript}")
    if turn.reply is not None:
        console.print(f'    reply  "{escape(turn.reply)}"')
    via = [f"{stage} {name}" for stage, name in (("stt", turn.stt_provider), ("tts", turn.tts_provider)) if name]
    if turn.stt_provider and turn.stt_provider == turn.tts_provider:
        via = [f"s2s {turn.stt_provider}"]
    if via:
        console.print(f"    [dim]via    {escape(' · '.join(via))}[/]")


def _latency_table(turns: list[TurnResult]) -> Padding:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False)
    table.add_column("turn (ms)", justify="right")
    for header in ("speech end→\nturn end", "turn end→\ntranscript", "agent", "turn end→\nfirst audio", "voice→\nvoice"):
        table.add_column(header.replace("\\n", "\n"), justify="right")
    for turn in turns:
        lat = turn.wall_latency_ms
        table.add_row(
            str(turn.index),
            *(_ms(lat.get(key)) for key in ("turn_end_delay", "stt_final", "agent", "tts_first_audio", "voice_to_voice")),
        )
    return Padding(table, (0, 0, 0, 4), expand=False)


def _incidents(result: ReplayResult) -> dict[int | None, list[str]]:
    from voicerouter.observe.timeline_text import incident_line

    out: dict[int | None, list[str]] = {}
    assert result.session is not None
    for event in result.session.events:
        if event.type not in INCIDENTS:
            continue
        data = event.to_dict()
        line = incident_line(data)
        if line is None:  # warnings
            line = f"! {data.get('message', '')}"
        style = "red" if event.type in (EventType.ERROR, EventType.REFUSED) else "yellow"
        out.setdefault(event.turn, []).append(f"[{style}]{escape(line)}[/]")
    return out


def render_checks(checks: list[Check], console: Console, *, unused: list[str] | None = None) -> None:
    if not checks:
        console.print("[yellow]expectations: no expectation matched the replayed files[/]")
    failed = [c for c in checks if not c.passed]
    by_file: dict[str, list[Check]] = {}
    for check in checks:
        by_file.setdefault(check.file, []).append(check)
    for file, file_checks in by_file.items():
        bad = [c for c in file_checks if not c.passed]
        if not bad:
            names = ", ".join(c.name for c in file_checks)
            console.print(f"[green]✓[/] {escape(file)}  [dim]{escape(names)}[/]")
        for check in bad:
            console.print(f"[red]✗ {escape(file)}: {escape(check.name)}[/] — {escape(check.message)}")
    for pattern in unused or []:
        console.print(f"[yellow]warning:[/] expectation {escape(pattern)!r} matched no replayed file")
    if checks:
        verdict = "[red]FAILED[/]" if failed else "[green]passed[/]"
        console.print(f"expectations {verdict}: {len(checks) - len(failed)}/{len(checks)} checks passed")


@contextmanager
def replay_progress(total: int, console: Console, *, enabled: bool = True) -> Iterator[Any]:
    """A progress bar for multi-file runs; yields a callback for `replay_files(on_progress=...)`."""
    if not enabled or total <= 1:
        yield lambda result: None
        return
    progress = Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}"),
        console=console,
        transient=True,
    )
    task = progress.add_task("replay", total=total, last="")
    with progress:

        def advance(result: ReplayResult) -> None:
            mark = "✓" if result.ok else "✗"
            progress.update(task, advance=1, last=f"{mark} {escape(result.file)}")

        yield advance
