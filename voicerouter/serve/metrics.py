"""Prometheus metrics of a `serve` process, declared once here with bounded label sets.

Labels are tenant, route, stage and provider. Routes and providers come from the routing table,
so they are bounded; a tenant is used as a label only when the table names it (a route's literal
tenant or a `numbers:` entry), any other tenant counts as "other", so callers cannot grow the
series. Sessions feed the metrics through their event bus (`observe`); breaker states are read
from the shared resilience state at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from voicerouter.session.events import Event, EventType

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

SESSIONS_ACTIVE = Gauge("voicerouter_sessions_active", "Sessions running now.", ["tenant", "route"], registry=REGISTRY)
SESSIONS_STARTED = Counter("voicerouter_sessions_started", "Sessions started.", ["tenant", "route", "transport"],
                           registry=REGISTRY)
SESSIONS_REFUSED = Counter("voicerouter_sessions_refused", "Calls and streams refused (capacity, draining).",
                           ["tenant", "route", "reason"], registry=REGISTRY)
TURNS = Counter("voicerouter_turns", "Turns ended.", ["tenant", "route"], registry=REGISTRY)
FAILOVERS = Counter("voicerouter_failovers", "Failovers, by the provider that failed.", ["route", "stage", "provider"],
                    registry=REGISTRY)
RETRIES = Counter("voicerouter_retries", "Retries, by provider.", ["route", "stage", "provider"], registry=REGISTRY)
ERRORS = Counter("voicerouter_stage_errors", "Turns whose stage failed on every provider.", ["route", "stage"],
                 registry=REGISTRY)
BREAKER_STATE = Gauge("voicerouter_breaker_state", "Circuit breaker per provider: 0 closed, 1 half-open, 2 open.",
                      ["provider"], registry=REGISTRY)
DTMF_DIGITS = Counter("voicerouter_dtmf_digits", "Keypad digits (DTMF) pressed by callers.", ["tenant", "route"],
                      registry=REGISTRY)
KEYPAD_TURNS = Counter("voicerouter_keypad_turns", "Keypad entries delivered to the agent as user turns.",
                       ["tenant", "route", "ended_by"], registry=REGISTRY)
BARGE_INS = Counter("voicerouter_barge_ins", "Replies stopped by the caller, by cause (speech or dtmf).",
                    ["tenant", "route", "cause"], registry=REGISTRY)
FIRST_AUDIO = Histogram("voicerouter_turn_first_audio_seconds", "Turn end -> first reply audio.", ["tenant", "route"],
                        buckets=_LATENCY_BUCKETS, registry=REGISTRY)
STAGE_LATENCY = Histogram("voicerouter_stage_latency_seconds",
                          "Per stage: turn end -> final transcript (stt), agent reply (agent), turn end -> first audio (tts).",
                          ["route", "stage", "provider"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
FRAME_LAG = Histogram("voicerouter_frame_lag_seconds", "Time a caller's audio frame waited before the session took it.",
                      buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 1.0), registry=REGISTRY)

_ENDED_BY = ("terminator", "max_digits", "timeout", "end_of_audio")
_BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


def tenant_label(tenant: str | None, known: Iterable[str]) -> str:
    if not tenant:
        return "-"
    return tenant if tenant in known else "other"


def observer(tenant: str, route: str) -> Callable[[Event], None]:
    """An event-bus subscriber that counts one session's turns, failovers, retries and latencies."""

    def observe(event: Event) -> None:
        data = event.data
        kind = event.type
        if kind == EventType.TURN_END:
            TURNS.labels(tenant, route).inc()
            if data.get("reason") == "dtmf":
                ended_by = str(data.get("ended_by"))
                KEYPAD_TURNS.labels(tenant, route, ended_by if ended_by in _ENDED_BY else "other").inc()
        elif kind == EventType.DTMF:
            DTMF_DIGITS.labels(tenant, route).inc()
        elif kind == EventType.BARGE_IN:
            BARGE_INS.labels(tenant, route, "dtmf" if data.get("cause") == "dtmf" else "speech").inc()
        elif kind == EventType.FAILOVER:
            provider = str(data.get("from_provider") or event.provider or "-")
            FAILOVERS.labels(route, str(data.get("stage") or "-"), provider).inc()
        elif kind == EventType.RETRY:
            RETRIES.labels(route, str(data.get("stage") or "-"), str(event.provider or "-")).inc()
        elif kind == EventType.ERROR and data.get("stage") in ("stt", "tts", "agent", "s2s"):
            ERRORS.labels(route, str(data["stage"])).inc()
        elif kind in (EventType.FINAL_TRANSCRIPT, EventType.AGENT_REPLY, EventType.TTS_FIRST_AUDIO):
            latency = data.get("latency_ms")
            if latency is None:
                return
            stage = {EventType.FINAL_TRANSCRIPT: "stt", EventType.AGENT_REPLY: "agent"}.get(kind, "tts")
            STAGE_LATENCY.labels(route, stage, str(event.provider or "-")).observe(float(latency) / 1000)
            if kind == EventType.TTS_FIRST_AUDIO:
                FIRST_AUDIO.labels(tenant, route).observe(float(latency) / 1000)

    return observe


def exposition(breakers: dict[str, str]) -> bytes:
    """The text exposition, with breaker states as of now."""
    for provider, state in breakers.items():
        BREAKER_STATE.labels(provider).set(_BREAKER_VALUES.get(state, 0))
    return generate_latest(REGISTRY)
