"""Typed, timestamped session events and the bus that fans them out.

Every step of a session (VAD, turn detection, providers, resilience) reports through an
`EventBus`; the console view, the JSONL log, reports and traces are all subscribers.
An event is one flat JSON object per line in the log, so reports can be built from logs alone.

Field conventions (in `data`, flattened into the JSON line); `t` is the session clock in seconds,
`audio_s` the position in the input audio (they differ when a replay runs faster than real time):
  session_start: pipeline, stt, tts, s2s (provider lists), source
  speech_start / speech_end: audio_s
  turn_end: turn, reason, start_s, end_s (audio positions of the utterance), delay_ms (speech end -> turn end)
  partial_transcript: text;  final_transcript: turn, text, latency_ms (turn end -> final)
  agent_reply: turn, text, latency_ms (final transcript -> reply)
  tts_start: turn, text;  tts_first_audio: turn, latency_ms (turn end -> first reply audio)
  tts_done: turn, audio_s_out (seconds of reply audio), start_audio_s
  provider_used: stage, provider;  failover: stage, from_provider, to_provider, reason, error, elapsed_ms
  retry: stage, attempt, delay_ms, reason;  hedge: stage, primary, secondary, winner
  breaker: state (closed/open/half_open), previous;  health: healthy, error
  refused / error / warning: message, stage, error_type;  session_end: turns, reason
  dtmf: digit, audio_s (a key pressed on the caller's keypad; digit null and masked true with dtmf.mask)
  barge_in: turn, audio_s, cause (speech | dtmf)
  turn_end of a keypad entry: reason "dtmf", digits, keys (how many), ended_by (terminator | max_digits | timeout |
    end_of_audio), text (digits and text null, masked true, with dtmf.mask)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, Any

from voicerouter.config.secrets import redact


class EventType(StrEnum):
    SESSION_START = "session_start"
    SESSION_END = "session_end"
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"
    TURN_END = "turn_end"  # data: reason, turn, start_s, end_s
    PARTIAL_TRANSCRIPT = "partial_transcript"
    FINAL_TRANSCRIPT = "final_transcript"
    AGENT_REPLY = "agent_reply"
    TTS_START = "tts_start"
    TTS_FIRST_AUDIO = "tts_first_audio"
    TTS_DONE = "tts_done"
    PROVIDER_USED = "provider_used"
    FAILOVER = "failover"
    RETRY = "retry"
    HEDGE = "hedge"
    BREAKER = "breaker"  # data: state (open/half_open/closed)
    HEALTH = "health"
    REFUSED = "refused"
    BARGE_IN = "barge_in"
    ERROR = "error"
    WARNING = "warning"
    AUDIO_LEVEL = "audio_level"
    FRAMES_DROPPED = "frames_dropped"
    FAULT_INJECTED = "fault_injected"  # data: stage, fault (the spec as written), kind; then the failure it causes
    DTMF = "dtmf"  # data: digit, audio_s
    CARRIER_STATUS = "carrier_status"  # data: carrier_type, kind (call/sms), status, final (serve's status webhooks)


@dataclass(frozen=True)
class Event:
    type: EventType
    t: float  # seconds since the session started (monotonic)
    wall: float  # unix time
    session_id: str
    tenant: str | None = None
    region: str | None = None
    route: str | None = None
    provider: str | None = None
    turn: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": str(self.type),
            "t": round(self.t, 4),
            "wall": round(self.wall, 4),
            "session_id": self.session_id,
            "tenant": self.tenant,
            "region": self.region,
            "route": self.route,
        }
        if self.provider is not None:
            out["provider"] = self.provider
        if self.turn is not None:
            out["turn"] = self.turn
        out.update(self.data)
        return out

    def to_json(self) -> str:
        return redact(json.dumps(self.to_dict(), ensure_ascii=False, default=str))


Subscriber = Callable[[Event], None]


class EventBus:
    """Stamps events with the session's context and hands them to every subscriber."""

    def __init__(
        self,
        session_id: str,
        *,
        tenant: str | None = None,
        region: str | None = None,
        route: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session_id = session_id
        self.tenant = tenant
        self.region = region
        self.route = route
        self._clock = clock
        self._t0 = clock()
        self._subscribers: list[Subscriber] = []
        self.history: list[Event] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def now(self) -> float:
        return self._clock() - self._t0

    def emit(
        self,
        type: EventType,
        *,
        provider: str | None = None,
        turn: int | None = None,
        t: float | None = None,
        **data: Any,
    ) -> Event:
        event = Event(
            type=type,
            t=self.now() if t is None else t,
            wall=time.time(),
            session_id=self.session_id,
            tenant=self.tenant,
            region=self.region,
            route=self.route,
            provider=provider,
            turn=turn,
            data=data,
        )
        self.history.append(event)
        for subscriber in self._subscribers:
            subscriber(event)
        return event


class JsonlWriter:
    """Subscriber that appends each event as one JSON line."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, event: Event) -> None:
        self._stream.write(event.to_json() + "\n")
        self._stream.flush()
