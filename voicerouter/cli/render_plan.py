"""Rich rendering of a `SessionPlan` for people."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from voicerouter.cli.common import stdout_console
from voicerouter.routing.plan import SessionPlan, StagePlan


def _stage_text(stage: StagePlan) -> str:
    chain = " -> ".join(stage.providers)
    if stage.strategy == "split" and stage.split:
        total = sum(stage.split.values())
        weights = ", ".join(f"{n} {w / total:.0%}" for n, w in stage.split.items())
        return f"split {{{weights}}}: this session -> [bold]{stage.picked}[/]; failover {chain}"
    if stage.strategy != "failover":
        return f"{stage.strategy} over {chain}"
    return chain if len(stage.providers) == 1 else f"{chain} (failover in order)"


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


def render_plan(plan: SessionPlan, source: str) -> None:
    console = stdout_console()
    data = plan.to_dict()
    title = f"session {plan.session_id}: route [bold]{plan.route}[/]" + ("" if plan.matched else " [yellow](no route matched)[/]")
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    table.add_row("routes", source)
    ctx = plan.context
    flags = ", ".join(f"{k}={'true' if v else 'false'}" for k, v in sorted(ctx.flags.items())) or "-"
    table.add_row("context", f"tenant={ctx.tenant or '-'} region={ctx.region or '-'} flags={flags}")
    table.add_row("why", "; ".join(plan.reasons))
    table.add_row("pipeline", "speech-to-speech (s2s)" if plan.pipeline == "s2s" else "STT -> agent -> TTS (stt_tts)")
    for stage in plan.stages() + plan.carrier_stages():
        table.add_row(stage.stage, _stage_text(stage))
    for name, cfg in data["provider_configs"].items():
        detail = ", ".join(f"{k}={v}" for k, v in cfg.items() if k not in ("options",))
        table.add_row(f"  {name}", f"[dim]{detail}[/]")
    if plan.pipeline == "stt_tts":
        table.add_row("agent", _settings(data["agent"]))
    table.add_row("vad", _settings(data["vad"]))
    table.add_row("turn", _settings(data["turn"]))
    table.add_row("barge-in", _settings(data["barge_in"]))
    table.add_row("resilience", _settings(data["resilience"]))
    console.print(table)
