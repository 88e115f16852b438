"""A compact terminal timeline of each session: who spoke when, when replies played, what went wrong.

Everything is placed on the input-audio axis (seconds into the caller's audio), so a replay that
ran faster than real time still lines up with the recording.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from voicerouter.observe.stats import TurnRecord, analyze, as_dicts, audio_clock, by_session, speech_regions

SPEECH, REPLY, BOTH, QUIET = "▇", "░", "▓", "·"
TICK_STEPS = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _clip(text: str | None, limit: int = 48) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def turn_line(record: TurnRecord) -> str:
    providers = record.providers
    parts = [f"turn {record.turn}"]
    if record.start_s is not None and record.end_s is not None:
        parts.append(f"{record.start_s:.2f}–{record.end_s:.2f} s")
    end = record.reason or "?"
    if record.turn_end_delay_ms is not None:
        end += f" +{record.turn_end_delay_ms:.0f} ms"
    parts.append(f"end {end}")
    stt = providers.get("stt") or providers.get("s2s")
    if stt or record.stt_final_ms is not None:
        parts.append(f"stt {stt or '?'} {_ms(record.stt_final_ms)}")
    tts = providers.get("tts") or providers.get("s2s")
    if tts or record.tts_first_audio_ms is not None:
        parts.append(f"tts {tts or '?'} {_ms(record.tts_first_audio_ms)}")
    parts.append(f"v→v {_ms(record.voice_to_voice_ms)}")
    line = "  ".join(parts)
    if record.text:
        line += f'  "{_clip(record.text)}"'
    if record.reply:
        line += f' → "{_clip(record.reply, 32)}"'
    return line


def incident_line(ev: dict[str, Any]) -> str | None:
    """One line for a failover, retry, hedge, breaker change, error, refusal, warning, barge-in or
    dropped audio; None for other events."""
    kind, stage = ev["type"], ev.get("stage") or ""
    provider = ev.get("provider") or ""
    if kind == "failover":
        why = ", ".join(str(x) for x in (ev.get("reason"), ev.get("elapsed_ms") and f"{ev['elapsed_ms']} ms") if x)
        return f"⚠ failover {stage} {ev.get('from_provider', '?')} → {ev.get('to_provider', '?')}" + (
            f" ({why})" if why else ""
        )
    if kind == "retry":
        detail = ", ".join(
            str(x) for x in (ev.get("reason"), ev.get("delay_ms") is not None and f"wait {ev['delay_ms']} ms") if x
        )
        return f"↻ retry {stage} {provider} #{ev.get('attempt', '?')}".replace("  ", " ") + (
            f" ({detail})" if detail else ""
        )
    if kind == "hedge":
        won = f", won by {ev['winner']}" if ev.get("winner") else ""
        return f"⇉ hedge {stage} {ev.get('primary', '?')} vs {ev.get('secondary', '?')}{won}"
    if kind == "breaker":
        return f"⊘ breaker {provider} {ev.get('previous', '?')} → {ev.get('state', '?')}".replace("  ", " ")
    if kind in ("error", "refused"):
        where = " ".join(x for x in (stage, provider) if x)
        # An error's cause is never cut: the end of the message is often the part that explains it.
        message = " ".join(str(ev.get("message") or ev.get("error") or "").split())
        return f"✗ {kind} {where}: {message}".replace("  ", " ")
    if kind == "warning":
        return f"! warning {stage}: {' '.join(str(ev.get('message') or '').split())}".replace("  ", " ")
    if kind == "fault_injected":
        return f"⚡ injected fault {stage} {ev.get('fault') or '?'}".replace("  ", " ")
    if kind == "barge_in":
        return "✋ barge-in"
    if kind == "frames_dropped":
        return f"! {ev.get('dropped', '?')} audio block(s) dropped ({ev.get('reason', '?')})"
    return None


def _ruler(duration: float, width: int) -> str:
    step = next((s for s in TICK_STEPS if duration / s <= width / 8), TICK_STEPS[-1])
    cells = [" "] * (width + 8)
    tick = 0.0
    while tick <= duration + 1e-9:
        col = round(tick / duration * (width - 1))
        label = f"|{tick:g}s"
        if all(c == " " for c in cells[col : col + len(label) + 1]):
            cells[col : col + len(label)] = label
        tick += step
    return "".join(cells).rstrip()


def _bar(spans: Iterable[tuple[float, float]], duration: float, width: int) -> list[bool]:
    lit = [False] * width
    for start, end in spans:
        first = max(0, math.floor(start / duration * width))
        last = min(width - 1, max(first, math.ceil(end / duration * width) - 1))
        for col in range(first, last + 1):
            lit[col] = True
    return lit


def render_session(events: list[dict[str, Any]], *, width: int = 72) -> str:
    """The timeline of one session's events."""
    first = events[0]
    start = next((e for e in events if e["type"] == "session_start"), first)
    analysis = analyze(events)
    turns = analysis.turns
    to_audio: Callable[[float], float] = audio_clock(events)
    regions = speech_regions(events)

    rows: list[tuple[float, str]] = []
    for record in turns:
        at = record.turn_end_s if record.turn_end_s is not None else to_audio(record.t or 0.0)
        rows.append((at, turn_line(record)))
    for ev in events:
        line = incident_line(ev)
        if line is not None:
            rows.append((to_audio(float(ev["t"])), line))
    rows.sort(key=lambda row: row[0])

    replies = [
        (r.reply_start_s, r.reply_start_s + (r.reply_audio_s or 0.0)) for r in turns if r.reply_start_s is not None
    ]
    last_event = max((to_audio(float(e["t"])) for e in events), default=0.0)
    ends = [last_event] + [end for _, end in replies] + [r.end_s or r.start_s for r in regions]
    duration = max(1.0, *ends)
    speech_spans = [(r.start_s, r.end_s if r.end_s is not None else duration) for r in regions]

    head = [f"session {first['session_id']}"]
    context = [f"{k}={first[k]}" for k in ("tenant", "region", "route") if first.get(k)]
    chains = [f"{stage}={','.join(map(str, start[stage]))}" for stage in ("stt", "tts", "s2s") if start.get(stage)]
    lines = ["  ".join(head + [" ".join(context)] + [" ".join(chains)]).rstrip()]
    label = 8
    lines.append(" " * label + _ruler(duration, width))
    you, them = _bar(speech_spans, duration, width), _bar(replies, duration, width)
    lines.append("you".ljust(label) + "".join(SPEECH if s else QUIET for s in you))
    lines.append(
        "reply".ljust(label)
        + "".join(BOTH if s and r else REPLY if r else QUIET for s, r in zip(you, them, strict=True))
    )
    for at, text in rows:
        lines.append(f"{at:7.2f}s {text}")
    if start.get("source"):
        lines.append(f"source: {start['source']}")
    return "\n".join(lines)


def render_timeline_text(events: list[dict[str, Any]], *, width: int = 72) -> str:
    """Text timeline of every session in `events` (log dicts or Event objects; blank line between sessions)."""
    if not events:
        return "(no events)"
    return "\n\n".join(render_session(evs, width=width) for evs in by_session(as_dicts(events)).values())
