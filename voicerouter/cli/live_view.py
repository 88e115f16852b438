"""The terminal view of a live session (`voicerouter run`): a rich renderable fed by the session's events.

`LiveView` is an `EventBus` subscriber; it keeps only what the screen shows (state, level, the
partial transcript, the last turns with their latencies, incidents) and renders on each refresh
of `rich.live.Live`. `render_summary` prints the turns and latencies when the session ends.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from voicerouter.session.events import Event, EventType

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from voicerouter.routing.plan import SessionPlan
    from voicerouter.session.results import SessionResult

LEVEL_FLOOR_DB = -60.0  # the meter's empty end; speech sits around -30..-10 dBFS
METER_WIDTH = 24
SHOWN_TURNS = 6
SHOWN_INCIDENTS = 5

_STATE_STYLE = {
    "starting": "dim",
    "listening": "green",
    "user speaking": "bold cyan",
    "thinking": "yellow",
    "speaking": "bold magenta",
    "stopping": "dim",
    "ended": "dim",
}


@dataclass
class _TurnRow:
    index: int
    you: str = ""
    reply: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False


def level_meter(dbfs: float | None, width: int = METER_WIDTH) -> Text:
    """A bar from `LEVEL_FLOOR_DB` (empty) to 0 dBFS (full), with the number."""
    if dbfs is None:
        return Text("·" * width + "   -- dBFS", style="dim")
    filled = round(max(0.0, min(1.0, (dbfs - LEVEL_FLOOR_DB) / -LEVEL_FLOOR_DB)) * width)
    style = "green" if dbfs < -12 else "yellow" if dbfs < -3 else "red"
    bar = Text("█" * filled, style=style)
    bar.append("·" * (width - filled), style="dim")
    bar.append(f" {max(dbfs, -99):5.0f} dBFS")
    return bar


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.0f} ms"


class LiveView:
    """Subscribe it to the bus (`bus.subscribe(view)`) and hand it to `rich.live.Live`."""

    def __init__(self, plan: SessionPlan, *, mic: str, speaker: str, duration_s: float | None = None) -> None:
        self.plan = plan
        self.mic = mic
        self.speaker = speaker
        self.duration_s = duration_s
        self.state = "starting"
        self.level_dbfs: float | None = None
        self.partial = ""
        self.frames_dropped = 0
        self.in_use: dict[str, str] = {}
        self.turns: dict[int, _TurnRow] = {}
        self.incidents: deque[Text] = deque(maxlen=SHOWN_INCIDENTS)
        self.t = 0.0

    # ---- events ----------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        self.t = event.t
        data = event.data
        kind = event.type
        if kind == EventType.AUDIO_LEVEL:
            self.level_dbfs = float(data.get("level_dbfs", LEVEL_FLOOR_DB))
        elif kind == EventType.SESSION_START:
            self.state = "listening"
        elif kind == EventType.SPEECH_START:
            self.state = "user speaking"
            self.partial = ""
        elif kind == EventType.SPEECH_END:
            if self.state == "user speaking":
                self.state = "listening"
        elif kind == EventType.TURN_END:
            self.state = "thinking"
            row = self._row(event)
            if row is not None and "delay_ms" in data:
                row.latency_ms["turn_end"] = float(data["delay_ms"])
            if row is not None and data.get("reason") == "dtmf":
                row.you = f"[keys] {data.get('digits') or '*' * int(data.get('keys') or 0)}"
        elif kind == EventType.PARTIAL_TRANSCRIPT:
            self.partial = str(data.get("text", ""))
        elif kind == EventType.FINAL_TRANSCRIPT:
            self.partial = ""
            row = self._row(event)
            if row is not None:
                row.you = str(data.get("text", ""))
                self._latency(row, "transcript", data)
        elif kind == EventType.AGENT_REPLY:
            row = self._row(event)
            if row is not None:
                row.reply = str(data.get("text", ""))
                self._latency(row, "agent", data)
        elif kind == EventType.TTS_FIRST_AUDIO:
            self.state = "speaking"
            row = self._row(event)
            if row is not None:
                self._latency(row, "first_audio", data)
                if "turn_end" in row.latency_ms and "first_audio" in row.latency_ms:
                    row.latency_ms["voice_to_voice"] = row.latency_ms["turn_end"] + row.latency_ms["first_audio"]
        elif kind == EventType.TTS_DONE:
            if self.state == "speaking":
                self.state = "listening"
        elif kind == EventType.BARGE_IN:
            self.state = "user speaking"
            row = self._row(event)
            if row is not None:
                row.interrupted = True
            self._incident("barge-in", f"reply {event.turn} cut after the user spoke", "cyan")
        elif kind == EventType.PROVIDER_USED:
            stage, provider = data.get("stage"), data.get("provider") or event.provider
            if stage and provider:
                self.in_use[str(stage)] = str(provider)
        elif kind == EventType.FAILOVER:
            self._incident(
                "failover",
                f"{data.get('stage')}: {data.get('from_provider')} → {data.get('to_provider')} ({data.get('reason')})",
                "yellow",
            )
        elif kind == EventType.BREAKER:
            self._incident("breaker", f"{event.provider or data.get('provider')}: {data.get('state')}", "yellow")
        elif kind == EventType.ERROR:
            self._incident("error", str(data.get("message", "")), "red")
        elif kind == EventType.WARNING:
            self._incident("warning", str(data.get("message", "")), "yellow")
        elif kind == EventType.FRAMES_DROPPED:
            self.frames_dropped = int(data.get("total", self.frames_dropped + int(data.get("dropped", 1))))
        elif kind == EventType.SESSION_END:
            self.state = "ended"

    def stopping(self) -> None:
        self.state = "stopping"

    def _row(self, event: Event) -> _TurnRow | None:
        index = event.turn if event.turn is not None else event.data.get("turn")
        if index is None:
            return None
        return self.turns.setdefault(int(index), _TurnRow(int(index)))

    @staticmethod
    def _latency(row: _TurnRow, name: str, data: dict[str, Any]) -> None:
        if data.get("latency_ms") is not None:
            row.latency_ms[name] = float(data["latency_ms"])

    def _incident(self, label: str, message: str, style: str) -> None:
        line = Text(f"{self.t:7.1f}s ", style="dim")
        line.append(f"{label} ", style=style)
        line.append(message)
        self.incidents.append(line)

    # ---- rendering -------------------------------------------------------------------------

    def _stage_text(self, stage: str, providers: list[str] | None) -> Text:
        text = Text(f"{stage} ", style="dim")
        active = self.in_use.get(stage) or (providers[0] if providers else None)
        for i, name in enumerate(providers or []):
            if i:
                text.append(" → ", style="dim")
            text.append(name, style="bold" if name == active else "")
        return text

    def __rich__(self) -> RenderableType:
        plan = self.plan
        ctx = plan.context
        head = Text("voicerouter run", style="bold")
        head.append(f"  session {plan.session_id}", style="dim")
        if ctx.tenant:
            head.append(f"  tenant {ctx.tenant}")
        if ctx.region:
            head.append(f"  region {ctx.region}")
        route = Text(f"route {plan.route} ({plan.pipeline})  ")
        for stage in plan.stages():
            route.append_text(self._stage_text(stage.stage, list(stage.providers)))
            route.append("  ")
        devices = Text(f"mic {self.mic}  ·  speaker {self.speaker}", style="dim")

        status = Text("● ", style=_STATE_STYLE.get(self.state, ""))
        status.append(f"{self.state:<14}", style=_STATE_STYLE.get(self.state, ""))
        status.append("  level ")
        status.append_text(level_meter(self.level_dbfs))
        clock = f"  {self.t:5.1f} s" + (f" / {self.duration_s:g} s" if self.duration_s else "")
        status.append(clock, style="dim")
        if self.frames_dropped:
            status.append(f"  dropped {self.frames_dropped} blocks", style="red")

        parts: list[RenderableType] = [head, route, devices, status]
        if self.partial:
            parts.append(Text(f"  … {self.partial}", style="italic cyan"))
        if self.turns:
            parts.append(self._turn_table())
        parts.extend(self.incidents)
        parts.append(Text("Ctrl-C to stop", style="dim"))
        return Group(*parts)

    def _turn_table(self) -> Table:
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="dim")
        table.add_column("#", justify="right")
        table.add_column("you said", overflow="fold", ratio=3)
        table.add_column("reply", overflow="fold", ratio=3)
        for name in ("turn end", "transcript", "agent", "1st audio", "voice→voice"):
            table.add_column(name, justify="right", no_wrap=True)
        for row in list(self.turns.values())[-SHOWN_TURNS:]:
            ms = row.latency_ms
            reply = Text(row.reply)
            if row.interrupted:
                reply.append(" [cut]", style="cyan")
            table.add_row(
                str(row.index), row.you, reply, _ms(ms.get("turn_end")), _ms(ms.get("transcript")),
                _ms(ms.get("agent")), _ms(ms.get("first_audio")), _ms(ms.get("voice_to_voice")),
            )
        return table


def render_summary(
    result: SessionResult, console: Console, *, dropped: int = 0, out_files: list[str] | None = None
) -> None:
    """The end-of-session summary: each turn with its latencies, then the medians."""
    head = Text.assemble(
        (f"session {result.session_id}", "bold"),
        f" ended ({result.reason}) · route {result.route} · {len(result.turns)} turn(s)",
    )
    if dropped:
        head.append(f" · {dropped} audio blocks dropped", style="red")
    console.print(head)
    if result.turns:
        table = Table(box=None, padding=(0, 1), header_style="dim")
        table.add_column("#", justify="right")
        table.add_column("you said", overflow="fold")
        table.add_column("reply", overflow="fold")
        keys = ("turn_end_delay", "stt_final", "agent", "tts_first_audio", "voice_to_voice")
        for name in ("turn end", "transcript", "agent", "1st audio", "voice→voice"):
            table.add_column(name, justify="right", no_wrap=True)
        for turn in result.turns:
            # Text, not markup: transcripts and errors may contain [brackets].
            reply = Text(turn.reply or "")
            if turn.interrupted:
                reply.append(" [cut]", style="cyan")
            if turn.error:
                reply = Text(turn.error, style="red")
            table.add_row(
                str(turn.index), Text(turn.transcript or ""), reply, *(_ms(turn.wall_latency_ms.get(k)) for k in keys)
            )
        medians = [_median([t.wall_latency_ms[k] for t in result.turns if k in t.wall_latency_ms]) for k in keys]
        table.add_row("", "[dim]median[/]", "", *(_ms(m) for m in medians))
        console.print(table)
    for error in result.errors:
        console.print(Text.assemble(("error", "red"), f" turn {error.turn}: {error.message}"))
    for path in out_files or []:
        console.print(Text(f"wrote {path}", style="dim"))


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
