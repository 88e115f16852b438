"""The latency and resilience report behind `voicerouter report`: one dict for scripts, rich tables for people.

JSON shape (`build_report(...)`, printed by `report --json`); times in milliseconds, audio positions
in seconds, null where the log has no data:

    {
      "version": 1,
      "group_by": "route" | "provider" | "tenant" | null,
      "percentiles": {"method": "linear", "quantiles": [50, 90, 99]},
      "files": ["events.jsonl", ...],
      "skipped_lines": [{"location": "events.jsonl:13", "reason": "not valid JSON ..."}],
      "session_count": 3,
      "total": GROUP,             # every selected turn, key null
      "groups": [GROUP, ...],     # one per route/tenant/provider (key null = not set); [] without --by
      "providers": [{"provider": "dg", "failovers_from": 1, "failovers_to": 0, "retries": 0,
                     "hedges": 1, "hedges_won": 1, "errors": 0, "breaker_opened": 0}, ...],
      "turns": [{"session_id", "turn", "tenant", "region", "route", "pipeline", "reason", "t",
                 "start_s", "end_s", "transcript", "reply", "providers": {"stt": "dg", "tts": "eleven"},
                 "latency_ms": {"turn_end_delay", "stt_final", "agent", "tts_first_audio", "voice_to_voice"},
                 "reply_start_s", "reply_audio_s"}, ...],
      "errors": [{"session_id", "t", "turn", "stage", "provider", "error_type", "message"}, ...],
      "deliveries": [{"carrier", "route", "kind": "call" | "sms", "count", "statuses": {status: n}}, ...]
    }
    GROUP = {"key": str | null, "session_count": int, "turn_count": int, "stages": [str] (by provider only),
             "latency_ms": {METRIC: {"n", "p50", "p90", "p99", "mean", "max"}},
             "failovers": int, "retries": int, "hedges": int, "errors": int}
    METRIC = voice_to_voice (turn_end.delay_ms + tts_first_audio.latency_ms: user stops speaking ->
             first reply audio) | stt_final | tts_first_audio | turn_end_delay | agent

Percentiles interpolate linearly between closest ranks (numpy's default); see observe.stats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voicerouter.config.secrets import redact
from voicerouter.observe.logs import EventLog
from voicerouter.observe.stats import (
    PERCENTILES,
    GroupBy,
    analyze,
    group_stats,
    provider_incidents,
)

if TYPE_CHECKING:
    from rich.console import Console

REPORT_VERSION = 1
METRIC_TITLES = {
    "voice_to_voice": "voice→voice",
    "stt_final": "STT final",
    "tts_first_audio": "TTS 1st audio",
    "turn_end_delay": "turn-end delay",
    "agent": "agent",
}
TABLE_METRICS = ("voice_to_voice", "stt_final", "agent", "tts_first_audio", "turn_end_delay")
COUNTERS = ("failovers", "retries", "hedges", "errors")
WIDE_LAYOUT_COLUMNS = 165  # below this the latency table is printed one metric per row
WIDE_TURNS_COLUMNS = 110  # below this turn transcripts are listed under the turns table


def deliveries(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outbound calls and messages by carrier, route and kind, counted by their last status
    (from `carrier_status` events: the carriers' status callbacks that `serve` recorded)."""
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for ev in events:
        if ev["type"] == "carrier_status":
            last[(str(ev.get("carrier_type")), ev["session_id"])] = ev  # file order: the latest wins
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for ev in last.values():
        key = (str(ev.get("provider") or ev.get("carrier_type")), str(ev.get("route") or ""), str(ev.get("kind")))
        row = rows.setdefault(key, {"carrier": key[0], "route": key[1] or None, "kind": key[2], "count": 0,
                                    "statuses": {}})
        row["count"] += 1
        row["statuses"][ev.get("status")] = row["statuses"].get(ev.get("status"), 0) + 1
    return sorted(rows.values(), key=lambda r: (r["carrier"], r["route"] or "", r["kind"]))


def build_report(log: EventLog, by: GroupBy | None = None) -> dict[str, Any]:
    analysis = analyze(e for e in log.events if e["type"] != "carrier_status")
    errors = [
        {
            "session_id": ev["session_id"],
            "t": ev.get("t"),
            "turn": ev.get("turn"),
            "stage": ev.get("stage"),
            "provider": provider,
            "error_type": ev.get("error_type") or ev["type"],
            "message": ev.get("message") or ev.get("error"),
        }
        for ev, provider in analysis.incidents
        if ev["type"] in ("error", "refused")
    ]
    return {
        "version": REPORT_VERSION,
        "group_by": by,
        "percentiles": {"method": "linear", "quantiles": list(PERCENTILES)},
        "files": [str(p) for p in log.files],
        "skipped_lines": [{"location": str(s.location), "reason": s.reason} for s in log.skipped],
        "session_count": len(analysis.sessions),
        "total": group_stats(analysis)[0].to_dict(),
        "groups": [g.to_dict() for g in group_stats(analysis, by)] if by else [],
        "providers": [p.to_dict() for p in provider_incidents(analysis)],
        "turns": [t.to_dict() for t in analysis.turns],
        "errors": errors,
        "deliveries": deliveries(log.events),
    }


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def fmt_dist(dist: dict[str, Any]) -> str:
    """'p50 / p90 / p99' in ms, or '-' for an empty group."""
    if not dist or not dist.get("n"):
        return "-"
    return " / ".join(fmt_ms(dist.get(f"p{q}")) for q in PERCENTILES)


def _count(value: int) -> str:
    return str(value) if value else "-"


def render_report(report: dict[str, Any], console: Console, *, show_turns: bool = False) -> None:
    """Print the report as rich tables: latency by group, provider incidents, errors, turns."""
    from rich.table import Table

    by = report.get("group_by")
    markup_safe = _escaper()
    rows = [(g["key"] or "(none)", g) for g in report["groups"]] if by else []
    rows.append(("total" if by else "all", report["total"]))
    if console.width >= WIDE_LAYOUT_COLUMNS:
        console.print(_latency_wide(rows, by, markup_safe))
    else:
        console.print(_latency_long(rows, by, markup_safe))
        console.print(_counts(rows, by, markup_safe))

    if report["providers"]:
        incidents = Table(title="Resilience by provider", title_justify="left")
        for column in (
            "provider",
            "failed over from",
            "failed over to",
            "retries",
            "hedges (won)",
            "errors",
            "breaker opened",
            "faults injected",
        ):
            incidents.add_column(column, justify="left" if column == "provider" else "right")
        for row in report["providers"]:
            hedges = f"{row['hedges']} ({row['hedges_won']})" if row["hedges"] else "-"
            incidents.add_row(
                markup_safe(row["provider"]),
                _count(row["failovers_from"]),
                _count(row["failovers_to"]),
                _count(row["retries"]),
                hedges,
                _count(row["errors"]),
                _count(row["breaker_opened"]),
                _count(row["faults_injected"]),
            )
        console.print(incidents)

    if report["errors"]:
        errors = Table(title="Errors", title_justify="left")
        for column in ("session", "t (s)", "turn", "stage", "provider", "type", "message"):
            errors.add_column(column, overflow="fold")
        for err in report["errors"]:
            errors.add_row(
                *map(
                    markup_safe,
                    (
                        err["session_id"],
                        "-" if err["t"] is None else f"{err['t']:.2f}",
                        "-" if err["turn"] is None else str(err["turn"]),
                        err["stage"] or "-",
                        err["provider"] or "-",
                        err["error_type"] or "-",
                        redact(err["message"] or "-"),
                    ),
                )
            )
        console.print(errors)

    if report.get("deliveries"):
        table = Table(title="Outbound calls and messages by carrier (last status)", title_justify="left")
        for column in ("carrier", "route", "kind", "count", "statuses"):
            table.add_column(column, justify="right" if column == "count" else "left")
        for row in report["deliveries"]:
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(row["statuses"].items()))
            table.add_row(*map(markup_safe, (row["carrier"], row["route"] or "-", row["kind"], str(row["count"]),
                                             statuses)))
        console.print(table)

    if show_turns:
        _render_turns(report["turns"], console)


def _latency_wide(rows, by: str | None, markup_safe):
    """One row per group, every metric as 'p50 / p90 / p99' (needs a wide terminal)."""
    quantiles = "/".join(f"p{q}" for q in PERCENTILES)
    return _group_table(rows, by, markup_safe, f"Latency (ms, {quantiles}, linear interpolation)", TABLE_METRICS)


def _group_table(rows, by: str | None, markup_safe, title: str, metrics: tuple[str, ...]):
    """One row per group: its sessions and turns, `metrics` as 'p50 / p90 / p99', the incident counters;
    the last row (all groups together) in a section of its own."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column(by or "all", style="bold", no_wrap=True)
    if by == "provider":
        table.add_column("stages", no_wrap=True)
    for column in ("sessions", "turns", *(METRIC_TITLES[n] for n in metrics), *COUNTERS):
        table.add_column(column, justify="right", no_wrap=True)
    for index, (key, group) in enumerate(rows):
        if by and index == len(rows) - 1:
            table.add_section()
        cells = [markup_safe(key)]
        if by == "provider":
            cells.append(",".join(group["stages"]) or "-")
        cells += [str(group["session_count"]), str(group["turn_count"])]
        cells += [fmt_dist(group["latency_ms"].get(name, {})) for name in metrics]
        cells += [_count(group[name]) for name in COUNTERS]
        table.add_row(*cells)
    return table


def _latency_long(rows, by: str | None, markup_safe):
    """One row per group and metric; fits an 80-column terminal."""
    from rich.table import Table

    table = Table(title="Latency (ms, linear interpolation)", title_justify="left")
    table.add_column(by or "all", style="bold", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    for column in ("n", *(f"p{q}" for q in PERCENTILES), "max"):
        table.add_column(column, justify="right", no_wrap=True)
    for index, (key, group) in enumerate(rows):
        if index:
            table.add_section()
        # A metric with no sample in this group (a TTS-only provider has no STT figure) is left out.
        metrics = [n for n in TABLE_METRICS if (group["latency_ms"].get(n) or {}).get("n")] or list(TABLE_METRICS[:1])
        for position, name in enumerate(metrics):
            dist = group["latency_ms"].get(name) or {}
            table.add_row(
                markup_safe(key) if position == 0 else "",
                METRIC_TITLES[name],
                str(dist.get("n") or 0),
                *(fmt_ms(dist.get(f"p{q}")) for q in PERCENTILES),
                fmt_ms(dist.get("max")),
            )
    return table


def _counts(rows, by: str | None, markup_safe):
    return _group_table(rows, by, markup_safe, "Turns and incidents", ())


def _render_turns(turns: list[dict[str, Any]], console: Console) -> None:
    """One compact table per session, so it stays readable in 80 columns."""
    from rich import box
    from rich.table import Table

    markup_safe = _escaper()
    sessions: dict[str, list[dict[str, Any]]] = {}
    for t in turns:
        sessions.setdefault(t["session_id"], []).append(t)
    for session_id, rows in sessions.items():
        first = rows[0]
        where = " / ".join(str(first[k]) for k in ("tenant", "region", "route") if first.get(k))
        table = Table(
            title=markup_safe(f"Turns of {session_id}  {where}  (ms)"), title_justify="left", box=box.SIMPLE_HEAD
        )
        for column in ("#", "stt", "tts", "end", "delay", "STT", "agent", "TTS 1st", "v→v"):
            numeric = column in ("#", "delay", "STT", "agent", "TTS 1st", "v→v")
            table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
        inline = console.width >= WIDE_TURNS_COLUMNS  # else transcripts go below the table
        if inline:
            table.add_column("transcript", ratio=1, overflow="fold")
        for t in rows:
            providers = t["providers"]
            cells = (
                str(t["turn"]),
                providers.get("stt") or providers.get("s2s") or "-",
                providers.get("tts") or providers.get("s2s") or "-",
                t["reason"] or "-",
                fmt_ms(t["latency_ms"]["turn_end_delay"]),
                fmt_ms(t["latency_ms"]["stt_final"]),
                fmt_ms(t["latency_ms"]["agent"]),
                fmt_ms(t["latency_ms"]["tts_first_audio"]),
                fmt_ms(t["latency_ms"]["voice_to_voice"]),
            ) + ((t["transcript"] or "",) if inline else ())
            table.add_row(*map(markup_safe, cells))
        console.print(table)
        if not inline:
            for t in rows:
                if t["transcript"]:
                    console.print(f"  {t['turn']:>2}  “{t['transcript']}”", markup=False, highlight=False)


def _escaper():
    """Log text is data, not rich markup: '[provider=x]' must print as written."""
    from rich.markup import escape

    return lambda value: escape(str(value))
