"""Turns and latency figures rebuilt from events, grouped by route, tenant or provider.

Percentiles use linear interpolation between closest ranks (numpy's default 'linear' method):
for sorted values v[0..n-1], p(q) = v[i] + (v[i+1] - v[i]) * f where i + f = (n - 1) * q / 100.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

GroupBy = Literal["route", "provider", "tenant"]
GROUP_BY: tuple[str, ...] = ("route", "provider", "tenant")
PERCENTILES = (50, 90, 99)
# Metric name -> TurnRecord attribute, in report order.
METRICS = {
    "voice_to_voice": "voice_to_voice_ms",
    "stt_final": "stt_final_ms",
    "tts_first_audio": "tts_first_audio_ms",
    "turn_end_delay": "turn_end_delay_ms",
    "agent": "agent_reply_ms",
}
# JSON latency keys (as in replay's turns) -> TurnRecord attribute.
LATENCY_KEYS = {
    "turn_end_delay": "turn_end_delay_ms",
    "stt_final": "stt_final_ms",
    "agent": "agent_reply_ms",
    "tts_first_audio": "tts_first_audio_ms",
    "voice_to_voice": "voice_to_voice_ms",
}
# Which stage's provider a metric belongs to when grouping by provider (None: any stage served).
METRIC_STAGE = {"stt_final": "stt", "tts_first_audio": "tts"}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation; None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Distribution:
    n: int
    p50: float | None
    p90: float | None
    p99: float | None
    mean: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Distribution:
        data = [float(v) for v in values if v is not None]
        if not data:
            return cls(0, None, None, None, None, None)
        p50, p90, p99 = (percentile(data, q) for q in PERCENTILES)
        return cls(len(data), p50, p90, p99, sum(data) / len(data), max(data))

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class TurnRecord:
    """One user turn and what it cost; *_ms fields are None when the log lacks the event."""

    session_id: str
    turn: int
    tenant: str | None = None
    region: str | None = None
    route: str | None = None
    pipeline: str | None = None
    reason: str | None = None
    t: float | None = None  # session clock at turn end
    start_s: float | None = None  # utterance start/end in the input audio
    end_s: float | None = None
    text: str | None = None
    reply: str | None = None
    providers: dict[str, str] = field(default_factory=dict)  # stage -> provider that served it
    turn_end_delay_ms: float | None = None
    stt_final_ms: float | None = None
    agent_reply_ms: float | None = None
    tts_first_audio_ms: float | None = None
    reply_start_s: float | None = None  # reply audio span on the input-audio axis: end_s + voice-to-voice
    reply_audio_s: float | None = None

    @property
    def voice_to_voice_ms(self) -> float | None:
        """User stops speaking -> first reply audio."""
        if self.turn_end_delay_ms is None or self.tts_first_audio_ms is None:
            return None
        return self.turn_end_delay_ms + self.tts_first_audio_ms

    @property
    def turn_end_s(self) -> float | None:
        if self.end_s is None:
            return None
        return self.end_s + (self.turn_end_delay_ms or 0) / 1000

    def to_dict(self) -> dict[str, Any]:
        """The turn in the JSON vocabulary `replay --json` uses too (see schemas/report.schema.json)."""
        return {
            "session_id": self.session_id,
            "turn": self.turn,
            "tenant": self.tenant,
            "region": self.region,
            "route": self.route,
            "pipeline": self.pipeline,
            "reason": self.reason,
            "t": self.t,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "transcript": self.text,
            "reply": self.reply,
            "providers": dict(self.providers),
            "latency_ms": {name: getattr(self, attr) for name, attr in LATENCY_KEYS.items()},
            "reply_start_s": self.reply_start_s,
            "reply_audio_s": self.reply_audio_s,
        }


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass
class SessionInfo:
    session_id: str
    tenant: str | None = None
    region: str | None = None
    route: str | None = None
    pipeline: str | None = None
    source: str | None = None
    start: dict[str, Any] = field(default_factory=dict)  # the session_start event
    end_reason: str | None = None


class _SessionState:
    """Walks one session's events in order; knows which provider currently serves each stage."""

    def __init__(self, session_id: str) -> None:
        self.info = SessionInfo(session_id)
        self.current: dict[str, str] = {}
        self.turns: dict[int, TurnRecord] = {}
        self.real_turns: set[int] = set()  # turns with a turn end, transcript or reply, not just a failover

    def stage_for(self, stage: str | None) -> str | None:
        if stage in ("stt", "tts") and self.info.pipeline == "s2s":
            return "s2s"
        return stage

    def turn(self, number: int, event: dict[str, Any]) -> TurnRecord:
        record = self.turns.get(number)
        if record is None:
            record = TurnRecord(
                session_id=self.info.session_id,
                turn=number,
                tenant=event.get("tenant"),
                region=event.get("region"),
                route=event.get("route"),
                pipeline=self.info.pipeline,
            )
            self.turns[number] = record
        return record


def event_provider(event: dict[str, Any], current: dict[str, str]) -> str | None:
    """The provider an event is about: its own field, else the stage's current provider."""
    return event.get("provider") or (current.get(event["stage"]) if event.get("stage") else None)


@dataclass
class Analysis:
    sessions: dict[str, SessionInfo]
    turns: list[TurnRecord]
    # Events that count against a provider, with the provider resolved: (event, provider or None).
    incidents: list[tuple[dict[str, Any], str | None]]


INCIDENT_TYPES = ("failover", "retry", "hedge", "error", "refused", "breaker", "fault_injected")
TURN_TYPES = ("turn_end", "final_transcript", "agent_reply", "tts_first_audio", "tts_done")


def analyze(events: Iterable[dict[str, Any]]) -> Analysis:
    """Rebuild sessions and turns from events (in log order, sessions may interleave)."""
    states: dict[str, _SessionState] = {}
    incidents: list[tuple[dict[str, Any], str | None]] = []
    for ev in events:
        sid = ev["session_id"]
        state = states.get(sid)
        if state is None:
            state = states[sid] = _SessionState(sid)
            state.info.tenant, state.info.region, state.info.route = ev.get("tenant"), ev.get("region"), ev.get("route")
        kind = ev["type"]
        number = ev.get("turn")
        record = state.turn(number, ev) if isinstance(number, int) and not isinstance(number, bool) else None
        if kind == "session_start":
            state.info.pipeline = ev.get("pipeline") or state.info.pipeline
            state.info.source = ev.get("source")
            state.info.start = ev
            for stage in ("stt", "tts", "s2s"):
                chain = ev.get(stage)
                if isinstance(chain, list) and chain:
                    state.current.setdefault(stage, str(chain[0]))
        elif kind == "session_end":
            state.info.end_reason = ev.get("reason")
        elif kind == "provider_used" and ev.get("stage") and ev.get("provider"):
            state.current[ev["stage"]] = ev["provider"]
            if record is not None:
                record.providers[state.stage_for(ev["stage"]) or ev["stage"]] = ev["provider"]
        elif kind in INCIDENT_TYPES:
            if kind == "failover" and ev.get("stage") and ev.get("to_provider"):
                provider = ev.get("from_provider")
                state.current[ev["stage"]] = ev["to_provider"]
            else:
                provider = event_provider(ev, state.current)
            incidents.append((ev, provider))
        if record is None:
            continue
        if kind in TURN_TYPES:
            state.real_turns.add(record.turn)
        if kind == "turn_end":
            record.reason = ev.get("reason")
            record.t = _num(ev.get("t"))
            record.start_s, record.end_s = _num(ev.get("start_s")), _num(ev.get("end_s"))
            record.turn_end_delay_ms = _num(ev.get("delay_ms"))
            if ev.get("reason") == "dtmf" and isinstance(ev.get("text"), str):
                record.text = ev["text"]  # a keypad turn: what the agent was given, no STT
        elif kind == "final_transcript":
            record.text = ev.get("text")
            record.stt_final_ms = _num(ev.get("latency_ms"))
            _served(state, record, "stt", ev)
        elif kind == "agent_reply":
            record.reply = ev.get("text")
            record.agent_reply_ms = _num(ev.get("latency_ms"))
        elif kind == "tts_first_audio":
            if record.tts_first_audio_ms is None:  # a reply spoken in sentences: the first one counts
                record.tts_first_audio_ms = _num(ev.get("latency_ms"))
            _served(state, record, "tts", ev)
        elif kind == "tts_done":
            out_s = _num(ev.get("audio_s_out"))
            start = _num(ev.get("start_audio_s"))
            if record.reply_start_s is None and start is not None:
                record.reply_start_s = start  # replaced below when the latencies are known
            if out_s is not None:
                record.reply_audio_s = (record.reply_audio_s or 0.0) + out_s
    turns: list[TurnRecord] = []
    for state in states.values():
        for record in sorted(state.turns.values(), key=lambda r: r.turn):
            if record.turn not in state.real_turns:
                continue
            # Where the reply starts on the input-audio axis: speech end + voice-to-voice latency. A replay
            # pauses or speeds its input, so the audio position logged at first reply audio can mislead.
            if record.end_s is not None and record.voice_to_voice_ms is not None:
                record.reply_start_s = record.end_s + record.voice_to_voice_ms / 1000
            turns.append(record)
    return Analysis({sid: s.info for sid, s in states.items()}, turns, incidents)


def _served(state: _SessionState, record: TurnRecord, stage: str, event: dict[str, Any]) -> None:
    stage = state.stage_for(stage) or stage
    if event.get("provider"):  # the event's own provider is the one that actually answered
        record.providers[stage] = event["provider"]
    elif stage not in record.providers and state.current.get(stage):
        record.providers[stage] = state.current[stage]


@dataclass
class GroupStats:
    key: str | None
    sessions: int = 0
    turns: int = 0
    stages: list[str] = field(default_factory=list)  # by provider: the stages it served
    latency: dict[str, Distribution] = field(default_factory=dict)
    failovers: int = 0
    retries: int = 0
    hedges: int = 0
    errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "session_count": self.sessions,
            "turn_count": self.turns,
            "stages": self.stages,
            "latency_ms": {name: dist.to_dict() for name, dist in self.latency.items()},
            "failovers": self.failovers,
            "retries": self.retries,
            "hedges": self.hedges,
            "errors": self.errors,
        }


@dataclass
class ProviderIncidents:
    """Resilience activity of one provider across every selected session."""

    provider: str
    failovers_from: int = 0  # this provider failed and another took over
    failovers_to: int = 0
    retries: int = 0
    hedges: int = 0
    hedges_won: int = 0
    errors: int = 0
    breaker_opened: int = 0
    faults_injected: int = 0  # by --inject or faults: (so failovers after them are not outages)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_error(ev: dict[str, Any]) -> bool:
    return ev["type"] in ("error", "refused")


def _group_stats(key: str | None, turns: list[TurnRecord], incidents, sessions: set[str], stage_of=None) -> GroupStats:
    group = GroupStats(key=key, sessions=len(sessions), turns=len(turns))
    for name, attr in METRICS.items():
        stage = METRIC_STAGE.get(name)
        chosen = turns
        if stage_of is not None and stage is not None:
            chosen = [t for t in turns if stage_of(t, stage)]
        group.latency[name] = Distribution.of(getattr(t, attr) for t in chosen)
    for ev, _provider in incidents:
        kind = ev["type"]
        group.failovers += kind == "failover"
        group.retries += kind == "retry"
        group.hedges += kind == "hedge"
        group.errors += _is_error(ev)
    return group


def _served_by(record: TurnRecord, stage: str, provider: str) -> bool:
    if record.providers.get(stage) == provider:
        return True
    return record.providers.get("s2s") == provider  # one s2s provider serves both ends


def group_stats(analysis: Analysis, by: GroupBy | None = None) -> list[GroupStats]:
    """One GroupStats per route / tenant / provider (sorted by key), or a single total when by is None.

    By provider, a turn counts for every provider that served one of its stages; STT latency only
    for its STT provider, TTS latency only for its TTS provider; failovers count against the
    provider failed away from, hedges against both contenders.
    """
    if by is None:
        return [_group_stats(None, analysis.turns, analysis.incidents, set(analysis.sessions))]
    if by not in GROUP_BY:
        raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(GROUP_BY)}")
    if by in ("route", "tenant"):
        keys = sorted({getattr(s, by) for s in analysis.sessions.values()}, key=lambda k: (k is None, k or ""))
        out = []
        for key in keys:
            sessions = {sid for sid, s in analysis.sessions.items() if getattr(s, by) == key}
            turns = [t for t in analysis.turns if t.session_id in sessions]
            incidents = [(e, p) for e, p in analysis.incidents if e["session_id"] in sessions]
            out.append(_group_stats(key, turns, incidents, sessions))
        return out
    providers: dict[str, set[str]] = {}
    for record in analysis.turns:
        for stage, name in record.providers.items():
            providers.setdefault(name, set()).add(stage)
    for ev, name in analysis.incidents:
        for other in _incident_providers(ev, name):
            providers.setdefault(other, set())
    out = []
    for name in sorted(providers):
        turns = [t for t in analysis.turns if name in t.providers.values()]
        incidents = [(e, p) for e, p in analysis.incidents if name in _incident_providers(e, p, counting=True)]
        sessions = {t.session_id for t in turns} | {e["session_id"] for e, _ in incidents}
        group = _group_stats(
            name, turns, incidents, sessions, stage_of=lambda t, stage, n=name: _served_by(t, stage, n)
        )
        group.stages = sorted(providers[name])
        out.append(group)
    return out


def _incident_providers(ev: dict[str, Any], provider: str | None, *, counting: bool = False) -> list[str]:
    """Providers an incident concerns; counting=True: only those it counts against."""
    names = [provider] if provider else []
    if ev["type"] == "failover" and not counting and ev.get("to_provider"):
        names.append(ev["to_provider"])
    if ev["type"] == "hedge":
        names = [n for n in (ev.get("primary"), ev.get("secondary")) if n]
    return [str(n) for n in names]


def provider_incidents(analysis: Analysis) -> list[ProviderIncidents]:
    """Failovers, retries, hedges and errors per provider, sorted by provider name."""
    table: dict[str, ProviderIncidents] = {}

    def row(name: str) -> ProviderIncidents:
        return table.setdefault(name, ProviderIncidents(name))

    for ev, provider in analysis.incidents:
        kind = ev["type"]
        if kind == "failover":
            if provider:
                row(provider).failovers_from += 1
            if ev.get("to_provider"):
                row(str(ev["to_provider"])).failovers_to += 1
        elif kind == "hedge":
            for name in _incident_providers(ev, provider):
                row(name).hedges += 1
            if ev.get("winner"):
                row(str(ev["winner"])).hedges_won += 1
        elif provider and kind == "retry":
            row(provider).retries += 1
        elif provider and _is_error(ev):
            row(provider).errors += 1
        elif provider and kind == "breaker" and ev.get("state") == "open":
            row(provider).breaker_opened += 1
        elif provider and kind == "fault_injected":
            row(provider).faults_injected += 1
    return [table[k] for k in sorted(table)]


@dataclass(frozen=True)
class SpeechRegion:
    start_s: float
    end_s: float | None  # None: the log ends while the user still speaks


def speech_regions(events: Iterable[dict[str, Any]]) -> list[SpeechRegion]:
    """VAD speech regions (speech_start .. speech_end, input-audio positions) of one session."""
    regions: list[SpeechRegion] = []
    open_start: float | None = None
    for ev in events:
        position = _num(ev.get("audio_s"))
        if position is None:
            continue
        if ev["type"] == "speech_start":
            if open_start is not None:
                regions.append(SpeechRegion(open_start, position))
            open_start = position
        elif ev["type"] == "speech_end" and open_start is not None:
            regions.append(SpeechRegion(open_start, position))
            open_start = None
    if open_start is not None:
        regions.append(SpeechRegion(open_start, None))
    return regions


def audio_clock(events: Iterable[dict[str, Any]]):
    """Map the session clock `t` onto the input-audio axis, for events that carry only `t`.

    Replays run faster than real time, so `t` and audio positions differ; events that carry both
    (speech_start/end, turn_end) pin the mapping, which is linear in between and runs at real-time
    speed past the last pin.
    """
    pins: list[tuple[float, float]] = []
    for ev in events:
        t = _num(ev.get("t"))
        if t is None:
            continue
        if ev["type"] in ("speech_start", "speech_end") and _num(ev.get("audio_s")) is not None:
            pins.append((t, float(ev["audio_s"])))
        elif ev["type"] == "turn_end" and _num(ev.get("end_s")) is not None:
            pins.append((t, float(ev["end_s"]) + (_num(ev.get("delay_ms")) or 0) / 1000))
    pins.sort()
    # keep the mapping monotonic even when pins disagree slightly
    clean: list[tuple[float, float]] = []
    for t, a in pins:
        if not clean or (t > clean[-1][0] and a >= clean[-1][1]):
            clean.append((t, a))

    def to_audio(t: float) -> float:
        if not clean:
            return t
        if t <= clean[0][0]:
            return max(0.0, clean[0][1] - (clean[0][0] - t))
        for (t0, a0), (t1, a1) in zip(clean, clean[1:], strict=False):
            if t <= t1:
                return a0 + (a1 - a0) * (t - t0) / (t1 - t0)
        return clean[-1][1] + (t - clean[-1][0])

    return to_audio


def by_session(events: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Events split per session id, in order of first appearance."""
    out: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        out.setdefault(ev["session_id"], []).append(ev)
    return out


def as_dicts(events: Iterable[Any]) -> list[dict[str, Any]]:
    """Accept log dicts or live `Event` objects (e.g. `bus.history`) alike."""
    return [e if isinstance(e, dict) else e.to_dict() for e in events]
