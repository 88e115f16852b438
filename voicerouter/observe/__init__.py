"""Observability built on the event log: reports, timelines, traces and route-tagged logging.

Names are loaded on first use, so importing the package pulls in neither rich, matplotlib nor
opentelemetry.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "read_events": "logs",
    "route_logger": "logs",
    "EventLogError": "logs",
    "percentile": "stats",
    "analyze": "stats",
    "group_stats": "stats",
    "build_report": "report",
    "render_report": "report",
    "render_timeline_text": "timeline_text",
    "render_timeline_png": "timeline_png",
    "write_timelines": "timeline_png",
    "attach_tracing": "otel",
    "TraceExporter": "otel",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'voicerouter.observe' has no attribute {name!r}")
    return getattr(importlib.import_module(f"voicerouter.observe.{module}"), name)
