"""In-process providers, agent and plans for session tests: real VAD, turn detection and audio,
scripted providers whose every call is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from voicerouter.audio.io import read_audio
from voicerouter.config.schema import (
    AgentConfig,
    BargeInConfig,
    ProviderConfig,
    ResilienceConfig,
    TurnConfig,
    VadConfig,
)
from voicerouter.errors import AllProvidersFailed, TransientProviderError
from voicerouter.providers.base import AudioChunk, BuildContext, Conversation, S2SEvent, SessionInfo, Transcript
from voicerouter.providers.pool import ProviderPool
from voicerouter.routing.plan import RouteContext, SessionPlan, StagePlan

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RATE = 16000


def jfk() -> bytes:
    return read_audio(FIXTURES / "jfk.flac").pcm


def cut(pcm: bytes, start_s: float, end_s: float) -> bytes:
    return pcm[int(start_s * RATE) * 2 : int(end_s * RATE) * 2]


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


def two_turns() -> bytes:
    """'and so my fellow Americans' ... 2 s pause ... 'what your country can do for you'."""
    pcm = jfk()
    return silence(0.5) + cut(pcm, 0.2, 2.5) + silence(2.0) + cut(pcm, 5.3, 7.9) + silence(0.3)


def three_turns() -> bytes:
    pcm = jfk()
    return (
        silence(0.5) + cut(pcm, 0.2, 2.5) + silence(2.0) + cut(pcm, 5.3, 7.9) + silence(2.0) + cut(pcm, 0.2, 2.5)
    )


class FakeSTT:
    kind = "stt"
    type = "fake"

    def __init__(self, name: str, texts: list[str], *, streaming: bool = False, fail_turns: set[int] = frozenset()):
        self.name = name
        self.texts = texts
        self.supports_streaming = streaming
        self.fail_turns = fail_turns
        self.calls = 0
        self.audio: list[bytes] = []  # the utterance audio of each call

    def _next(self) -> str:
        self.calls += 1
        if self.calls in self.fail_turns:
            raise AllProvidersFailed(
                "stt", [TransientProviderError("503 from upstream", provider=self.name)], provider=self.name
            )
        return self.texts[(self.calls - 1) % len(self.texts)]

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        self.audio.append(audio.pcm)
        text = self._next()
        return Transcript(text, provider=self.name)

    async def open_stream(self, sample_rate: int = RATE, on_partial: Any = None) -> FakeStream:
        return FakeStream(self, on_partial)

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class FakeStream:
    def __init__(self, stt: FakeSTT, on_partial: Any) -> None:
        self.stt = stt
        self.on_partial = on_partial
        self.pcm = bytearray()
        self.closed = False

    async def send(self, pcm: bytes) -> None:
        self.pcm += pcm
        if self.on_partial is not None and len(self.pcm) % 32000 < len(pcm):
            self.on_partial(Transcript(f"partial {len(self.pcm)}", is_final=False, provider=self.stt.name))

    async def finish(self) -> Transcript:
        self.stt.audio.append(bytes(self.pcm))
        return Transcript(self.stt._next(), provider=self.stt.name)

    async def aclose(self) -> None:
        self.closed = True


class FakeTTS:
    """Yields `chunks` chunks per sentence; for the calls numbered in `hold` it stops after the first
    chunk and waits until cancelled (a reply still playing when the user speaks again)."""

    kind = "tts"
    type = "fake"

    def __init__(self, name: str, *, chunks: int = 3, hold: frozenset[int] = frozenset(), log: list[str] | None = None,
                 fail: bool = False):
        self.name = name
        self.chunks = chunks
        self.hold = hold
        self.fail = fail
        self.log = log if log is not None else []
        self.texts: list[str] = []
        self.cancelled = 0
        self.finished = 0

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        self.texts.append(text)
        if self.fail:
            raise AllProvidersFailed("tts", [TransientProviderError("timeout", provider=self.name)])
        try:
            for i in range(self.chunks):
                self.log.append(f"tts:{i}")
                yield AudioChunk(bytes(2 * 2205), 22050)  # 0.1 s
                if len(self.texts) in self.hold:
                    await asyncio.Event().wait()
                await asyncio.sleep(0)
            self.finished += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class FakeS2S:
    kind = "s2s"
    type = "fake"

    def __init__(
        self, name: str, replies: list[tuple[str, str]], *, hold: frozenset[int] = frozenset(),
        drop: frozenset[int] = frozenset(),
    ) -> None:
        self.name = name
        self.replies = replies  # (user transcript, reply text) per turn
        self.hold = hold  # responses (numbered across sessions) that stop after their first audio
        self.drop = drop  # responses whose connection breaks after their first word
        self.responses = 0
        self.sessions: list[FakeS2SSession] = []

    async def connect(self, *, instructions: str | None, history: Conversation) -> FakeS2SSession:
        session = FakeS2SSession(self, instructions, [m.text for m in history.messages])
        self.sessions.append(session)
        return session

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class FakeS2SSession:
    def __init__(self, provider: FakeS2S, instructions: str | None, history: list[str]) -> None:
        self.provider = provider
        self.instructions = instructions
        self.history = history
        self.pending = bytearray()
        self.committed: list[bytes] = []
        self.closed = False

    async def send_audio(self, pcm: bytes, sample_rate: int = RATE) -> None:
        self.pending += pcm

    async def respond(self) -> AsyncIterator[S2SEvent]:
        self.committed.append(bytes(self.pending))
        self.pending.clear()
        self.provider.responses += 1
        number = self.provider.responses
        user, reply = self.provider.replies[(number - 1) % len(self.provider.replies)]
        yield S2SEvent("user_transcript", text=user)
        for word in reply.split():
            yield S2SEvent("reply_text", text=word + " ")
            yield S2SEvent("audio", audio=AudioChunk(bytes(4800), 24000))
            if number in self.provider.hold:
                await asyncio.Event().wait()
            if number in self.provider.drop:
                raise TransientProviderError("connection dropped mid-response", provider=self.provider.name)
        yield S2SEvent("done")

    async def aclose(self) -> None:
        self.closed = True


class EchoAgent:
    name = "echo"

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    async def reply(self, text: str, conversation: Conversation, session: SessionInfo) -> str:
        self.seen.append([m.text for m in conversation.messages])
        return f"You said: {text}. Thank you."

    async def aclose(self) -> None:
        return None


class FakePool(ProviderPool):
    """The real pool (configs, kinds, secrets) handing out the scripted instances."""

    def __init__(self, instances: dict[str, Any], configs: dict[str, ProviderConfig] | None = None) -> None:
        configs = configs or {
            name: ProviderConfig(type="openai-compatible", kind=inst.kind, base_url="http://127.0.0.1:9")
            for name, inst in instances.items()
        }
        super().__init__(configs, BuildContext(env={}))
        self.fakes = instances

    def build(self, name: str) -> Any:
        self.config(name)
        return self.fakes[name]


def make_plan(
    pool: FakePool,
    *,
    pipeline: str = "stt_tts",
    barge_in: BargeInConfig | None = None,
    turn: TurnConfig | None = None,
    resilience: ResilienceConfig | None = None,
) -> SessionPlan:
    by_kind: dict[str, list[str]] = {}
    for name, inst in pool.fakes.items():
        by_kind.setdefault(inst.kind, []).append(name)

    def stage(kind: str) -> StagePlan | None:
        names = by_kind.get(kind)
        return StagePlan(kind, tuple(names)) if names else None  # type: ignore[arg-type]

    return SessionPlan(
        context=RouteContext(tenant="acme", region="eu-west", session_id="test-session"),
        route="test-route",
        matched=True,
        reasons=("tenant=acme",),
        pipeline=pipeline,  # type: ignore[arg-type]
        stt=stage("stt") if pipeline == "stt_tts" else None,
        tts=stage("tts") if pipeline == "stt_tts" else None,
        s2s=stage("s2s") if pipeline == "s2s" else None,
        vad=VadConfig(),
        turn=turn or TurnConfig(),
        agent=AgentConfig(),
        resilience=resilience or ResilienceConfig(retries=0),
        barge_in=barge_in or BargeInConfig(),
        instructions="Be brief.",
        providers=dict(pool.configs),
    )
