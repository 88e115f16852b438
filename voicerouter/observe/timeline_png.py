"""A per-session timeline picture: waveform, speech, turn ends, transcripts, replies, provider switches.

Needs the optional matplotlib extra (`pip install 'voicerouter[plot]'`); drawn with the Agg backend,
so it works without a display. Everything sits on the input-audio axis, as in the text timeline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from voicerouter.errors import UsageError, VoiceRouterError
from voicerouter.observe.stats import analyze, as_dicts, audio_clock, by_session, speech_regions
from voicerouter.observe.timeline_text import incident_line

PLOT_HINT = "the timeline needs matplotlib: pip install 'voicerouter[plot]'"
ENVELOPE_BINS = 3000
COLORS = {
    "wave": "#4a6fa5",
    "speech": "#59a14f",
    "reply": "#f28e2b",
    "turn": "#333333",
    "failover": "#e15759",
    "retry": "#edc948",
    "hedge": "#76b7b2",
    "error": "#b6202b",
    "breaker": "#9c755f",
    "barge_in": "#b07aa1",
    "warning": "#f1a340",
    "frames_dropped": "#f1a340",
}
LANES = {"you": 2.0, "reply": 1.0, "events": 0.0}
# The gap before a reply, split by stage (user stops speaking -> first reply audio).
GAP_COLORS = {"turn end": "#bbbbbb", "STT": "#4e79a7", "agent": "#b07aa1", "TTS": "#f6c28b"}
LABEL_LEVELS = 3  # event labels go on this many rows, so neighbours do not overprint


def gap_segments(record: Any) -> list[tuple[str, float, float]]:
    """(stage, start_s, end_s) pieces of the gap before a reply on the input-audio axis: the
    turn-end wait, STT final, agent, then TTS until the first audio (pieces the log lacks are left out)."""
    if record.end_s is None or record.turn_end_delay_ms is None:
        return []
    at = record.end_s + record.turn_end_delay_ms / 1000
    pieces = [("turn end", record.end_s, at)]
    for stage, ms in (("STT", record.stt_final_ms), ("agent", record.agent_reply_ms)):
        if ms is not None and ms > 0:
            pieces.append((stage, at, at + ms / 1000))
            at += ms / 1000
    if record.reply_start_s is not None and record.reply_start_s > at:
        pieces.append(("TTS", at, record.reply_start_s))
    return [p for p in pieces if p[2] > p[1]]


def label_rows(positions: list[float], spacing: float) -> list[int]:
    """A row (0..LABEL_LEVELS-1) per label at `positions` (sorted): the first row whose last label
    is at least `spacing` away, else the row used longest ago."""
    last: list[float | None] = [None] * LABEL_LEVELS
    rows = []
    for x in positions:
        free = [i for i, prev in enumerate(last) if prev is None or x - prev >= spacing]
        row = free[0] if free else min(range(LABEL_LEVELS), key=lambda i: last[i] or 0.0)
        last[row] = x
        rows.append(row)
    return rows


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UsageError(PLOT_HINT) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _short(text: str | None, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _envelope(pcm: bytes, sample_rate: int):
    """(times, low, high) of the waveform, binned so long recordings draw fast."""
    import numpy as np

    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    if samples.size == 0:
        return None
    bins = min(ENVELOPE_BINS, samples.size)
    usable = samples[: samples.size // bins * bins].reshape(bins, -1)
    times = (np.arange(bins) + 0.5) * usable.shape[1] / sample_rate
    return times, usable.min(axis=1), usable.max(axis=1)


def render_timeline_png(
    events: list[dict[str, Any]], audio_pcm: bytes | None, sample_rate: int, path: str | Path
) -> Path:
    """Draw one session's timeline (the first session in `events`) to a PNG at `path`; returns the path.

    events: log dicts or live Event objects (`bus.history`).
    audio_pcm: the session's input as mono int16 PCM at `sample_rate`, or None to leave out the waveform.
    """
    plt = _pyplot()
    events = as_dicts(events)
    if not events:
        raise UsageError("no events to draw a timeline from")
    session_id = events[0]["session_id"]
    events = [e for e in events if e["session_id"] == session_id]
    start = next((e for e in events if e["type"] == "session_start"), events[0])
    turns = analyze(events).turns
    regions = speech_regions(events)
    to_audio: Callable[[float], float] = audio_clock(events)
    envelope = _envelope(audio_pcm, sample_rate) if audio_pcm and sample_rate > 0 else None

    replies = [
        (r, r.reply_start_s, r.reply_start_s + max(r.reply_audio_s or 0.0, 0.05))
        for r in turns
        if r.reply_start_s is not None
    ]
    # Replayed faster than real time, a reply can run past the next one's start: draw each reply
    # only until the next begins (the next reply interrupted it on this axis).
    replies = [
        (r, start, min(end, replies[i + 1][1]) if i + 1 < len(replies) and replies[i + 1][1] > start else end)
        for i, (r, start, end) in enumerate(replies)
    ]
    incidents = [(to_audio(float(e["t"])), e) for e in events if incident_line(e) is not None]
    extents = [0.0, *(end for _, _, end in replies), *(to_audio(float(e["t"])) for e in events)]
    extents += [r.end_s if r.end_s is not None else r.start_s for r in regions]
    if envelope is not None:
        extents.append(len(audio_pcm) / 2 / sample_rate)
    duration = max(1.0, *extents) * 1.02
    speech_spans = [(r.start_s, r.end_s if r.end_s is not None else duration) for r in regions]

    fig, (ax_wave, ax_lanes) = plt.subplots(
        2,
        1,
        figsize=(_width_in(duration), 6.5),
        dpi=110,
        sharex=True,
        gridspec_kw={"height_ratios": [2.2, 1.6], "hspace": 0.08},
    )
    try:
        _title(fig, start, events[0])
        _draw_wave(ax_wave, envelope, speech_spans, turns)
        _draw_lanes(ax_lanes, speech_spans, replies, incidents, turns, duration)
        _legend(fig, incidents)
        ax_lanes.set_xlim(0, duration)
        ax_lanes.set_xlabel("input audio (s)")
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, bbox_inches="tight")
    except OSError as exc:
        raise VoiceRouterError(f"cannot write timeline {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return out


def _width_in(duration_s: float) -> float:
    """Figure width: 14 in up to a minute of audio, then wider (to 48 in) so labels keep room."""
    return min(48.0, max(14.0, duration_s / 4.5))


def _legend(fig, incidents) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=COLORS["speech"], label="user speech (VAD)"), Patch(color=COLORS["reply"], label="reply audio")]
    handles += [Patch(color=color, label=f"gap: {stage}") for stage, color in GAP_COLORS.items()]
    handles.append(Line2D([], [], color=COLORS["turn"], ls="--", label="turn end"))
    for kind in dict.fromkeys(ev["type"] for _, ev in incidents):
        handles.append(Line2D([], [], color=COLORS.get(kind, "#555555"), marker="v" if kind == "failover" else "o",
                              ls="", label=kind.replace("_", " ")))
    fig.legend(handles=handles, loc="upper right", ncol=min(4, len(handles)), fontsize=7.5, frameon=False)


def _title(fig, start: dict[str, Any], first: dict[str, Any]) -> None:
    context = "   ".join(f"{k} {first[k]}" for k in ("tenant", "region", "route") if first.get(k))
    chains = "   ".join(f"{s} {' → '.join(map(str, start[s]))}" for s in ("stt", "tts", "s2s") if start.get(s))
    source = f"   source {start['source']}" if start.get("source") else ""
    fig.suptitle(f"session {first['session_id']}   {context}", x=0.01, ha="left", fontsize=12, fontweight="bold")
    fig.text(0.01, 0.925, f"{chains}{source}", ha="left", fontsize=9, color="#555555")


def _draw_wave(ax, envelope, speech_spans, turns) -> None:
    for start, end in speech_spans:
        ax.axvspan(start, end, color=COLORS["speech"], alpha=0.18, lw=0)
    if envelope is not None:
        times, low, high = envelope
        ax.fill_between(times, low, high, color=COLORS["wave"], lw=0.4)
        peak = max(float(abs(low).max()), float(abs(high).max()), 0.05)
        ax.set_ylim(-peak * 1.6, peak * 1.6)
    else:
        ax.set_ylim(-1, 1)
        ax.text(0.5, 0.5, "(input audio not available)", transform=ax.transAxes, ha="center", color="#999999")
    ax.set_yticks([])
    ax.set_ylabel("input")
    top = ax.get_ylim()[1]
    for index, record in enumerate(turns):
        if record.turn_end_s is not None:
            ax.axvline(record.turn_end_s, color=COLORS["turn"], ls="--", lw=1)
            delay = f" +{record.turn_end_delay_ms:.0f} ms" if record.turn_end_delay_ms is not None else ""
            ax.text(
                record.turn_end_s,
                top * 0.93,
                f" turn {record.turn} end\n {record.reason or '?'}{delay}",
                fontsize=7.5,
                va="top",
                color=COLORS["turn"],
            )
        if record.text and record.start_s is not None:
            ax.text(
                record.start_s,
                -top * (0.9 if index % 2 == 0 else 0.72),  # staggered so close turns stay legible
                f"“{_short(record.text, 60)}”",
                fontsize=8.5,
                va="bottom",
                color="#1f4d1a",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": COLORS["speech"], "alpha": 0.85},
            )
    ax.grid(axis="x", color="#dddddd", lw=0.6)


def _draw_lanes(ax, speech_spans, replies, incidents, turns, duration: float = 1.0) -> None:
    height = 0.55
    for record in turns:
        for stage, start, end in gap_segments(record):
            ax.broken_barh([(start, end - start)], (LANES["reply"] - height / 2, height * 0.35), color=GAP_COLORS[stage])
    ax.broken_barh([(s, e - s) for s, e in speech_spans], (LANES["you"] - height / 2, height), color=COLORS["speech"])
    for record, start, end in replies:
        ax.broken_barh([(start, end - start)], (LANES["reply"] - height / 2, height), color=COLORS["reply"])
        provider = record.providers.get("tts") or record.providers.get("s2s") or ""
        label = (
            f"{provider} · v→v {record.voice_to_voice_ms:.0f} ms" if record.voice_to_voice_ms is not None else provider
        )
        ax.text(start, LANES["reply"] + height / 2 + 0.05, label, fontsize=7.5, va="bottom")
        if record.reply:
            ax.text(start, LANES["reply"] - height / 2 - 0.05, f"“{_short(record.reply, 40)}”", fontsize=7, va="top")
        if record.end_s is not None:  # the voice-to-voice gap: user stops speaking -> reply audio
            ax.annotate(
                "",
                xy=(start, LANES["reply"]),
                xytext=(record.end_s, LANES["you"] - height / 2),
                arrowprops={"arrowstyle": "->", "color": "#888888", "lw": 0.8},
            )
    incidents = sorted(incidents, key=lambda item: item[0])
    rows = label_rows([at for at, _ in incidents], spacing=duration * 0.12)
    for (at, ev), row in zip(incidents, rows, strict=True):
        color = COLORS.get(ev["type"], "#555555")
        ax.plot([at], [LANES["events"]], marker="v" if ev["type"] == "failover" else "o", color=color, ms=8)
        ax.axvline(at, color=color, lw=0.8, alpha=0.5, ymax=0.2)
        offset = -0.22 - 0.2 * row
        ax.text(at, LANES["events"] + offset, _short(incident_line(ev), 48), fontsize=7, color=color, va="top")
    ax.set_yticks(list(LANES.values()), list(LANES))
    ax.set_ylim(-0.4 - 0.2 * LABEL_LEVELS, 2.6)
    ax.grid(axis="x", color="#dddddd", lw=0.6)


def find_source_audio(source: str | None, search_dirs: Iterable[Path]) -> Path | None:
    """The input file a session_start `source` names: as given, or next to the event log."""
    if not source or source in ("mic", "microphone", "-"):
        return None
    given = Path(source)
    candidates = [given] if given.is_absolute() else []
    for directory in search_dirs:
        candidates += [directory / given, directory / given.name]
    if not given.is_absolute():
        candidates.append(given)
    return next((c for c in candidates if c.is_file()), None)


def write_timelines(
    events: list[dict[str, Any]],
    out_dir: str | Path,
    *,
    audio: Callable[[str, dict[str, Any]], tuple[bytes, int] | None] | None = None,
) -> list[Path]:
    """One PNG per session, `<out_dir>/<session_id>.timeline.png` (the naming `replay --timeline` uses, by file stem).

    audio(session_id, session_start_event) returns (mono int16 PCM, sample rate) or None.
    """
    _pyplot()  # fail early with the install hint, before any work
    out = Path(out_dir)
    paths = []
    for session_id, session_events in by_session(as_dicts(events)).items():
        start = next((e for e in session_events if e["type"] == "session_start"), session_events[0])
        found = audio(session_id, start) if audio else None
        pcm, rate = found if found else (None, 0)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in session_id)
        paths.append(render_timeline_png(session_events, pcm, rate, out / f"{safe}.timeline.png"))
    return paths


def audio_from_logs(
    session_files: dict[str, Path], *, warn: Callable[[str], None] | None = None
) -> Callable[[str, dict[str, Any]], tuple[bytes, int] | None]:
    """An `audio` callback for write_timelines that loads each session's source file, if it can be found.

    An unreadable source raises AudioFileError, or, with `warn`, is reported there and drawn without waveform.
    """
    from voicerouter.audio.io import read_audio
    from voicerouter.errors import AudioFileError

    def load(session_id: str, start: dict[str, Any]) -> tuple[bytes, int] | None:
        log = session_files.get(session_id)
        dirs = [log.parent] if log is not None else []
        path = find_source_audio(start.get("source"), dirs)
        if path is None:
            return None
        try:
            chunk = read_audio(path, 16000)
        except AudioFileError as exc:
            if warn is None:
                raise
            warn(f"session {session_id}: waveform left out: {exc}")
            return None
        return chunk.pcm, chunk.sample_rate

    return load
