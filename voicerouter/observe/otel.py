"""Optional OpenTelemetry traces from session events: a span per session, per turn, per stage.

Off unless asked for: `attach_tracing(bus)` does nothing (and imports nothing) unless a tracer
provider is passed or the standard OTEL_* variables configure an exporter
(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_TRACES_EXPORTER).
Needs the extra: `pip install 'voicerouter[otel]'`.

Spans: `voice.session` -> `voice.turn` (speech end .. last event of the turn) -> `stt`, `agent`, `tts`.
Every span carries voicerouter.{session_id, tenant, region, route}; turn and stage spans also
voicerouter.turn, stage spans voicerouter.{stage, provider, latency_ms}. Failovers, retries, hedges
and breaker changes are span events on the stage span (else the turn, else the session span);
errors are `exception` span events. A turn's spans are emitted once it is complete: when its
reply has been spoken (tts_done), when the turn after next ends (a turn that never replied), when
the session ends, or when the exporter is closed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voicerouter.config.secrets import redact
from voicerouter.errors import UsageError

ENABLE_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")
INSTALL_HINT = "pip install 'voicerouter[otel]'"
SERVICE_NAME = "voicerouter"
STAGES = ("stt", "agent", "tts")
INCIDENTS = ("failover", "retry", "hedge", "breaker", "barge_in")
CONTEXT = ("session_id", "tenant", "region", "route")

_log = logging.getLogger("voicerouter.otel")
_default_provider: Any = None
_warned_missing = False


def tracing_configured(env: Mapping[str, str] | None = None) -> bool:
    """True when the OTEL_* environment asks for traces."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(env.get(name, "").strip() for name in ENABLE_VARS)


def otel_installed() -> bool:
    """Whether the otel extra is importable (only asked once tracing is wanted, so importing is fine)."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def default_tracer_provider(env: Mapping[str, str] | None = None) -> Any:
    """The application's global tracer provider if it set one, else an SDK provider built from OTEL_*."""
    global _default_provider
    if _default_provider is not None:
        return _default_provider
    from opentelemetry import trace

    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        _default_provider = current
        return current
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    env = os.environ if env is None else env
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(attributes))  # also reads OTEL_RESOURCE_ATTRIBUTES
    for exporter in _exporters(env):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _default_provider = provider
    return provider


def _exporters(env: Mapping[str, str]) -> list[Any]:
    names = [n.strip().lower() for n in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(",") if n.strip()]
    exporters = []
    for name in names:
        if name == "console":
            import sys

            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            # stderr, not the SDK's default stdout: stdout belongs to the command (--json documents).
            exporters.append(ConsoleSpanExporter(out=sys.stderr))
        elif name == "otlp":
            protocol = (
                env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf"
            )
            try:
                if protocol == "grpc":
                    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
                else:
                    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                package = "opentelemetry-exporter-otlp-proto-grpc" if protocol == "grpc" else INSTALL_HINT
                raise UsageError(f"OTEL_TRACES_EXPORTER=otlp ({protocol}) needs {package}") from None
            exporters.append(OTLPSpanExporter())  # endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*
        elif name != "none":
            raise UsageError(
                f"OTEL_TRACES_EXPORTER: unknown exporter {name!r}", hint="voicerouter supports otlp, console, none"
            )
    return exporters


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _attrs(values: Mapping[str, Any], prefix: str = "voicerouter.") -> dict[str, Any]:
    """OTel attributes take only str/bool/int/float (or lists of them); drop the rest."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, str):
            out[prefix + key] = redact(value)
        elif isinstance(value, bool | int | float):
            out[prefix + key] = value
        elif isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            out[prefix + key] = [redact(v) for v in value]
    return out


@dataclass
class _Turn:
    number: int
    start_wall: float
    last_wall: float
    attributes: dict[str, Any]
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> start/end/attributes/events
    events: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)  # not tied to a stage
    status_error: str | None = None


@dataclass
class _Session:
    span: Any
    context: Any
    base: dict[str, Any]
    last_wall: float
    turns: dict[int, _Turn] = field(default_factory=dict)
    stage_events: dict[tuple[int, str], list[tuple[str, dict[str, Any], float]]] = field(default_factory=dict)


class TraceExporter:
    """Event subscriber that turns a session's events into spans (several sessions may interleave)."""

    def __init__(self, tracer_provider: Any) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer_provider.get_tracer("voicerouter.observe.otel")
        self._sessions: dict[str, _Session] = {}
        self._anchors: dict[str, float] = {}  # session id -> wall time at t = 0
        self.closed = False

    def __call__(self, event: Any) -> None:
        if self.closed:
            return
        self.handle(event if isinstance(event, dict) else event.to_dict())

    def handle(self, ev: dict[str, Any]) -> None:
        kind = ev["type"]
        # Span times are the session's start (wall clock) plus the monotonic session clock `t`,
        # so a wall-clock jump mid-session cannot reorder spans.
        anchor = self._anchors.setdefault(ev["session_id"], float(ev.get("wall") or 0.0) - float(ev["t"]))
        wall = anchor + float(ev["t"])
        session = self._session(ev, wall)
        session.last_wall = max(session.last_wall, wall)
        number = ev.get("turn") if isinstance(ev.get("turn"), int) else None
        if kind == "session_end":
            self._end_session(ev["session_id"], wall, ev)
            return
        if kind == "turn_end" and number is not None:
            # Turns are answered in order, so one two back is finished even if it never spoke.
            for open_turn in [t for n, t in session.turns.items() if n <= number - 2]:
                self._end_turn(session, open_turn)
            delay = float(ev.get("delay_ms") or 0) / 1000
            attributes = dict(session.base) | _attrs({"turn": number, "turn.reason": ev.get("reason")})
            if isinstance(ev.get("delay_ms"), int | float):
                attributes["voicerouter.turn_end_delay_ms"] = float(ev["delay_ms"])
            session.turns[number] = _Turn(number, wall - delay, wall, attributes)
            return
        turn = session.turns.get(number) if number is not None else None
        if turn is not None:
            turn.last_wall = max(turn.last_wall, wall)
        if kind in INCIDENTS or kind in ("error", "refused"):
            self._incident(session, turn, ev, wall)
        elif turn is not None:
            self._stage_event(turn, ev, wall)
            if kind == "tts_done":  # the reply has been spoken: the turn is complete
                self._end_turn(session, turn)

    def _session(self, ev: dict[str, Any], wall: float) -> _Session:
        sid = ev["session_id"]
        session = self._sessions.get(sid)
        if session is None:
            base = _attrs({k: ev.get(k) for k in CONTEXT})
            extra = (
                {k: ev.get(k) for k in ("pipeline", "stt", "tts", "s2s", "source")}
                if ev["type"] == "session_start"
                else {}
            )
            span = self._tracer.start_span("voice.session", start_time=_ns(wall), attributes=base | _attrs(extra))
            session = _Session(span, self._trace.set_span_in_context(span), base, wall)
            self._sessions[sid] = session
        return session

    def _stage_event(self, turn: _Turn, ev: dict[str, Any], wall: float) -> None:
        kind = ev["type"]
        latency = ev.get("latency_ms") if isinstance(ev.get("latency_ms"), int | float) else None
        if kind in ("final_transcript", "agent_reply"):
            stage = "stt" if kind == "final_transcript" else "agent"
            start = wall - (latency or 0) / 1000
            info = turn.stages.setdefault(stage, {"start": start, "end": wall, "attrs": {}, "events": []})
            info["end"] = wall
            info["attrs"].update(_attrs({"provider": ev.get("provider"), "latency_ms": latency}))
        elif kind in ("tts_start", "tts_first_audio", "tts_done"):
            info = turn.stages.setdefault("tts", {"start": wall, "end": wall, "attrs": {}, "events": []})
            info["end"] = max(info["end"], wall)
            if ev.get("provider"):
                info["attrs"]["voicerouter.provider"] = ev["provider"]
            if kind == "tts_first_audio" and "voicerouter.latency_ms" not in info["attrs"] and latency is not None:
                info["attrs"]["voicerouter.latency_ms"] = latency  # turn end -> first reply audio
                info["events"].append(("first_audio", _attrs({"latency_ms": latency}), wall))
                turn.attributes["voicerouter.voice_to_voice_ms"] = (
                    turn.attributes.get("voicerouter.turn_end_delay_ms", 0.0) + latency
                )
            elif kind == "tts_done" and isinstance(ev.get("audio_s_out"), int | float):
                info["attrs"]["voicerouter.audio_s_out"] = info["attrs"].get("voicerouter.audio_s_out", 0.0) + float(
                    ev["audio_s_out"]
                )

    def _incident(self, session: _Session, turn: _Turn | None, ev: dict[str, Any], wall: float) -> None:
        kind = ev["type"]
        details = {k: v for k, v in ev.items() if k not in ("type", "t", "wall", *CONTEXT)}
        if kind in ("error", "refused"):
            name = "exception"
            attributes = {
                "exception.type": str(ev.get("error_type") or kind),
                "exception.message": redact(str(ev.get("message") or ev.get("error") or "")),
            } | _attrs({k: v for k, v in details.items() if k not in ("message", "error_type")})
        else:
            name, attributes = kind, _attrs(details)
        if turn is None:
            session.span.add_event(name, attributes, timestamp=_ns(wall))
            if kind == "refused":
                session.span.set_status(
                    self._trace.Status(self._trace.StatusCode.ERROR, attributes["exception.message"])
                )
            return
        stage = ev.get("stage")
        if stage in STAGES:
            session.stage_events.setdefault((turn.number, stage), []).append((name, attributes, wall))
        else:
            turn.events.append((name, attributes, wall))

    def _end_turn(self, session: _Session, turn: _Turn) -> None:
        session.turns.pop(turn.number, None)
        span = self._tracer.start_span(
            "voice.turn", context=session.context, start_time=_ns(turn.start_wall), attributes=turn.attributes
        )
        context = self._trace.set_span_in_context(span)
        for stage in STAGES:
            pending = session.stage_events.pop((turn.number, stage), [])
            info = turn.stages.get(stage)
            if info is None:  # the stage never answered: its failovers and errors belong to the turn
                turn.events.extend(pending)
                continue
            attributes = session.base | _attrs({"turn": turn.number, "stage": stage}) | info["attrs"]
            child = self._tracer.start_span(
                stage, context=context, start_time=_ns(info["start"]), attributes=attributes
            )
            for name, attrs, at in sorted(info["events"] + pending, key=lambda e: e[2]):
                child.add_event(name, attrs, timestamp=_ns(at))
            child.end(end_time=_ns(info["end"]))
        for name, attrs, at in sorted(turn.events, key=lambda e: e[2]):
            span.add_event(name, attrs, timestamp=_ns(at))
        span.end(end_time=_ns(max(turn.last_wall, turn.start_wall)))

    def _end_session(self, session_id: str, wall: float, ev: dict[str, Any] | None = None) -> None:
        session = self._sessions.pop(session_id, None)
        self._anchors.pop(session_id, None)
        if session is None:
            return
        for turn in list(session.turns.values()):
            self._end_turn(session, turn)
        if ev is not None:
            session.span.set_attributes(_attrs({"turns": ev.get("turns"), "end_reason": ev.get("reason")}))
        session.span.end(end_time=_ns(wall))

    def close(self) -> None:
        """End every open turn and session span (at its last known time) and ignore further events."""
        for sid, session in list(self._sessions.items()):
            self._end_session(sid, session.last_wall)
        self.closed = True


def attach_tracing(
    bus: Any, tracer_provider: Any = None, *, env: Mapping[str, str] | None = None
) -> Callable[[], None]:
    """Subscribe a TraceExporter to `bus` when tracing is wanted; returns `detach()`, which ends open spans.

    With no tracer provider and no OTEL_* configuration, or without the otel extra, nothing is
    imported and detach is a no-op.
    """
    global _warned_missing
    if tracer_provider is None:
        if not tracing_configured(env):
            return _noop
        if not otel_installed():
            if not _warned_missing:
                _log.warning("OTEL_* is set but OpenTelemetry is not installed; no traces (%s)", INSTALL_HINT)
                _warned_missing = True
            return _noop
        tracer_provider = default_tracer_provider(env)
    exporter = TraceExporter(tracer_provider)
    bus.subscribe(exporter)

    def detach() -> None:
        bus.unsubscribe(exporter)
        exporter.close()

    return detach


def export_events(events: Iterable[dict[str, Any]], tracer_provider: Any) -> int:
    """Send the spans of recorded events (e.g. an event log) through `tracer_provider`; returns the event count."""
    exporter = TraceExporter(tracer_provider)
    count = 0
    for count, event in enumerate(events, start=1):  # noqa: B007
        exporter.handle(event)
    exporter.close()
    return count


def _noop() -> None:
    return None
