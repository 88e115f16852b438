"""A session plan for people, from its JSON form (`SessionPlan.to_dict()`): a table on a terminal,
tab-separated `key<TAB>value` lines in a pipe (without importing rich, so cached `resolve` is fast)."""

from __future__ import annotations

import sys
from typing import Any


def _stage_text(stage: dict[str, Any], bold: bool) -> str:
    chain = " -> ".join(stage["providers"])
    if stage["strategy"] == "split" and stage.get("split"):
        total = sum(stage["split"].values())
        weights = ", ".join(f"{n} {w / total:.0%}" for n, w in stage["split"].items())
        picked = f"[bold]{stage['picked']}[/]" if bold else stage["picked"]
        return f"split {{{weights}}}: this session -> {picked}; failover {chain}"
    if stage["strategy"] != "failover":
        return f"{stage['strategy']} over {chain}"
    return chain if len(stage["providers"]) == 1 else f"{chain} (failover in order)"


def _settings(values: dict[str, Any]) -> str:
    parts = []
    for key, value in values.items():
        if isinstance(value, dict):
            inner = {k: v for k, v in value.items() if v not in (None, {}, [])}
            if inner:
                parts.append(f"{key}: {_settings(inner)}")
        elif value is not None:
            parts.append(f"{key}={value}")
    return "{" + ", ".join(parts) + "}" if parts else "-"


def plan_rows(data: dict[str, Any], source: str, *, markup: bool = False) -> tuple[str, list[tuple[str, str]]]:
    """The title and (label, value) rows; `markup` adds rich styles (values are escaped)."""
    esc = _escape if markup else (lambda text: text)
    unmatched = (" [yellow](no route matched)[/]" if markup else " (no route matched)") if not data["matched"] else ""
    route = f"[bold]{esc(data['route'])}[/]" if markup else data["route"]
    title = f"session {esc(data['session_id'])}: route {route}{unmatched}"
    flags = ", ".join(f"{k}={'true' if v else 'false'}" for k, v in sorted(data["flags"].items())) or "-"
    rows = [
        ("routes", esc(source)),
        ("context", esc(f"tenant={data['tenant'] or '-'} region={data['region'] or '-'} flags={flags}")),
        ("why", esc("; ".join(data["reasons"]))),
        ("pipeline", "speech-to-speech (s2s)" if data["pipeline"] == "s2s" else "STT -> agent -> TTS (stt_tts)"),
    ]
    for stage, plan in data["stages"].items():
        rows.append((stage, _stage_text({**plan, "providers": [esc(p) for p in plan["providers"]]}, markup)))
    for name, cfg in data["provider_configs"].items():
        detail = esc(", ".join(f"{k}={v}" for k, v in cfg.items() if k != "options"))
        rows.append((f"  {esc(name)}", f"[dim]{detail}[/]" if markup else detail))
    if data["pipeline"] == "stt_tts":
        rows.append(("agent", esc(_settings(data["agent"]))))
    for label, key in (("vad", "vad"), ("turn", "turn"), ("barge-in", "barge_in"), ("dtmf", "dtmf"), ("resilience", "resilience")):
        rows.append((label, esc(_settings(data[key]))))
    return title, rows


def render_plan(data: dict[str, Any], source: str) -> None:
    from voicerouter.cli.common import stdout_is_terminal

    if not stdout_is_terminal():
        title, rows = plan_rows(data, source)
        sys.stdout.write(title + "\n" + "".join(f"{label.strip()}\t{value}\n" for label, value in rows))
        return
    from rich.table import Table

    from voicerouter.cli.common import stdout_console

    title, rows = plan_rows(data, source, markup=True)
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for row in rows:
        table.add_row(*row)
    stdout_console().print(table)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
