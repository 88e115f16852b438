"""What a finished session hands back: its turns with their latencies, its errors and its events.

Kept apart from the pipeline so reports, replay and tests can use the shapes without asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voicerouter.errors import EXIT_OK
from voicerouter.session.events import Event

# Latency names, in the order a turn goes through them (all in milliseconds).
# Measured on the wall clock: what the providers really took (they vary with the machine's load).
LATENCY_KEYS = ("turn_end_delay", "stt_final", "agent", "tts_first_audio", "voice_to_voice")
# Measured on the session's audio clock (seconds of input read): exact and repeatable in a fast
# replay, where the audio stands still while a turn is answered (providers take no audio time, so
# these measure the turn-taking: how long after the speech the turn ended and the reply started);
# within a frame of the wall clock when the input is real time.
AUDIO_LATENCY_KEYS = ("turn_end_delay", "tts_first_audio", "voice_to_voice")


@dataclass
class TurnResult:
    """One user turn and the reply to it. Times `start_s`/`end_s` are positions in the input audio."""

    index: int
    start_s: float
    end_s: float
    transcript: str | None = None
    reply: str | None = None
    stt_provider: str | None = None
    tts_provider: str | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # audio clock: AUDIO_LATENCY_KEYS
    wall_latency_ms: dict[str, float] = field(default_factory=dict)  # wall clock: LATENCY_KEYS
    reason: str | None = None  # why the turn ended (turn detector)
    interrupted: bool = False  # the reply was cut by a barge-in
    reply_audio_s: float = 0.0
    error: str | None = None

    @property
    def providers(self) -> dict[str, str]:
        """Stage -> the provider that served this turn (`s2s` when one provider did both ends)."""
        if self.stt_provider and self.stt_provider == self.tts_provider:
            return {"s2s": self.stt_provider}
        return {stage: name for stage, name in (("stt", self.stt_provider), ("tts", self.tts_provider)) if name}

    def to_dict(self) -> dict[str, Any]:
        return {
            "turn": self.index,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "transcript": self.transcript,
            "reply": self.reply,
            "providers": self.providers,
            "latency_ms": {k: round(v, 1) for k, v in self.latency_ms.items()},
            "wall_latency_ms": {k: round(v, 1) for k, v in self.wall_latency_ms.items()},
            "reason": self.reason,
            "interrupted": self.interrupted,
            "reply_audio_s": round(self.reply_audio_s, 3),
            "error": self.error,
        }


@dataclass
class SessionError:
    """An error the session reported and went on from (or ended on)."""

    message: str
    stage: str | None = None
    error_type: str | None = None
    turn: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "stage": self.stage, "error_type": self.error_type, "turn": self.turn}


@dataclass
class SessionResult:
    session_id: str
    route: str
    pipeline: str
    turns: list[TurnResult] = field(default_factory=list)
    errors: list[SessionError] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    reason: str = "end_of_audio"  # end_of_audio | stopped | providers_down
    exit_code: int = EXIT_OK
    providers: dict[str, list[str]] = field(default_factory=dict)  # stage -> planned provider order

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "route": self.route,
            "pipeline": self.pipeline,
            "providers": self.providers,
            "turns": [t.to_dict() for t in self.turns],
            "errors": [e.to_dict() for e in self.errors],
            "reason": self.reason,
            "exit_code": self.exit_code,
        }
