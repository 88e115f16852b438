"""The provider contracts: what the pipeline asks of an STT, TTS, S2S provider or an agent.

Every provider is async and raises the typed errors of `voicerouter.errors`; a failover chain
implements the same protocol, so the pipeline never knows that failover exists.
Audio crossing these interfaces is always signed 16-bit little-endian mono PCM (`AudioChunk`),
at the rate the chunk says; the pipeline's own rate is `PIPELINE_RATE`.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Kind = Literal["stt", "tts", "s2s", "call", "sms"]
KINDS: tuple[Kind, ...] = ("stt", "tts", "s2s", "call", "sms")
PIPELINE_RATE = 16000


@dataclass(frozen=True)
class AudioChunk:
    """A piece of mono PCM16 audio.

    `words` is optional vendor alignment for TTS audio: (word, start_s, end_s) of the words whose
    audio ends in this chunk, times from the start of the synthesized text's audio. With it, a
    sentence broken mid-way resumes exactly at the first word the listener has not heard.
    """

    pcm: bytes
    sample_rate: int
    words: tuple[tuple[str, float, float], ...] = ()

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True)
class Transcript:
    text: str
    is_final: bool = True
    confidence: float | None = None
    provider: str | None = None


@dataclass
class Message:
    role: Literal["user", "assistant", "system"]
    text: str
    input: str = "speech"  # how a user message came: speech, or dtmf (typed on the keypad)


@dataclass
class Conversation:
    """The history of one session; agents and S2S failover read it."""

    messages: list[Message] = field(default_factory=list)

    def add(self, role: Literal["user", "assistant", "system"], text: str, *, input: str = "speech") -> None:
        self.messages.append(Message(role, text, input))


@dataclass(frozen=True)
class SessionInfo:
    """Route context handed to providers and agents (for webhooks, error messages, tags)."""

    session_id: str
    tenant: str | None = None
    region: str | None = None
    route: str | None = None
    flags: dict[str, bool] = field(default_factory=dict)


class Provider(Protocol):
    name: str  # instance name from the routing table
    type: str  # provider type, e.g. "deepgram"
    kind: Kind

    async def probe(self) -> None:
        """A cheap readiness check (tiny synthesis, short transcription, handshake); raises on failure."""

    async def aclose(self) -> None: ...


PartialCallback = Callable[[Transcript], None]


@runtime_checkable
class STTStream(Protocol):
    """One utterance streamed to a provider as it is spoken.

    Partials (`on_partial`) may arrive at any time, from any thread. A stream that can make them
    reproducible also offers the optional method

        async def flush(self) -> None

    meaning: "returns once every partial for the audio sent so far has been delivered through
    `on_partial`". Such a stream produces partials at points determined by the audio alone (the
    samples sent, e.g. every 100 ms of audio), never by wall-clock time or by how far its worker
    happens to be, so the same audio sent in the same pieces always gives the same partials at the
    same audio positions. `flush` should be cheap when no partial is due (no point of the audio
    cadence was crossed since the last flush), because a faster-than-real-time session calls it
    before every turn-detection decision, i.e. every frame. A stream without that guarantee
    (a cloud service whose partials come back when the network delivers them) has no `flush`;
    wrappers (failover chains, fault injection) expose `flush` exactly when the stream they
    forward to has one (`getattr(stream, "flush", None)` is None otherwise).

    In fast (not real-time) sessions the turn detector reads only flushed partials; the partials
    of streams without `flush` are reported as events but do not steer turn ends there (see
    `voicerouter.session.session`).
    """

    async def send(self, pcm: bytes) -> None: ...

    async def finish(self) -> Transcript:
        """No more audio: wait for and return the final transcript of everything sent."""

    async def aclose(self) -> None: ...


class STTProvider(Provider, Protocol):
    supports_streaming: bool

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        """Transcribe one whole utterance (batch)."""

    async def open_stream(
        self, sample_rate: int = PIPELINE_RATE, on_partial: PartialCallback | None = None
    ) -> STTStream:
        """Start streaming an utterance (only when `supports_streaming`)."""


class TTSProvider(Provider, Protocol):
    def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """Yield audio as it arrives, so playback can start before synthesis ends."""


@dataclass(frozen=True)
class S2SEvent:
    type: Literal["user_transcript", "reply_text", "audio", "done"]
    text: str = ""
    audio: AudioChunk | None = None


class S2SSession(Protocol):
    async def send_audio(self, pcm: bytes, sample_rate: int = PIPELINE_RATE) -> None: ...

    def respond(self) -> AsyncIterator[S2SEvent]:
        """Commit the audio sent since the last response and stream the reply until done.

        A session may also take `respond(resume_after=TEXT)`: TEXT is the start of this reply that
        the user already heard from a connection that broke mid-reply, and the reply should go on
        from there (OpenAI Realtime does). Callers pass it only to sessions whose `respond` has
        that parameter; others start the reply over, and the words they repeat are skipped.

        A session may also have `async truncate(heard_s)`: the user heard only the first `heard_s`
        seconds of the last reply's audio (a barge-in cut it), so the provider's own conversation
        keeps only that much (OpenAI Realtime's `conversation.item.truncate`). See `truncate_heard`.
        """

    async def aclose(self) -> None: ...


def respond_resuming(session: S2SSession, heard: str) -> AsyncIterator[S2SEvent]:
    """`session.respond()`, telling it the start of the reply already heard when it can take that."""
    if heard:
        try:
            accepts = "resume_after" in inspect.signature(session.respond).parameters
        except (TypeError, ValueError):
            accepts = False
        if accepts:
            return session.respond(resume_after=heard)  # type: ignore[call-arg]
    return session.respond()


async def truncate_heard(session: S2SSession, heard_s: float) -> None:
    """Tell `session` its last reply was heard only up to `heard_s` seconds of its audio, when its
    protocol can take that (Gemini Live cannot: its history keeps all the audio it sent)."""
    truncate = getattr(session, "truncate", None)
    if truncate is not None:
        await truncate(heard_s)


class S2SProvider(Provider, Protocol):
    async def connect(self, *, instructions: str | None, history: Conversation) -> S2SSession: ...


class Agent(Protocol):
    """Turns a user's transcript into the reply text."""

    name: str

    async def reply(self, text: str, conversation: Conversation, session: SessionInfo) -> str: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class BuildContext:
    """What a provider factory gets besides its own config."""

    env: dict[str, str]
    session: SessionInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)
