"""The resilience layer inside a real session: real speech, VAD and turn detection, injected faults by turn."""

from __future__ import annotations

import asyncio
from pathlib import Path

from resilience_fakes import FakeTTS, provider_of

from voicerouter.audio.io import read_audio
from voicerouter.audio.sink import MemorySink
from voicerouter.audio.source import PcmSource
from voicerouter.config.schema import (
    AgentConfig,
    BackoffConfig,
    BargeInConfig,
    ProviderConfig,
    ResilienceConfig,
    TurnConfig,
    VadConfig,
)
from voicerouter.providers.base import AudioChunk, Transcript
from voicerouter.resilience import parse_faults
from voicerouter.routing.plan import RouteContext, SessionPlan, StagePlan
from voicerouter.session.events import EventType
from voicerouter.session.session import Session

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RATE = 16000


def three_turns() -> bytes:
    pcm = read_audio(FIXTURES / "jfk.flac").pcm

    def cut(a: float, b: float) -> bytes:
        return pcm[int(a * RATE) * 2 : int(b * RATE) * 2]

    gap = bytes(2 * RATE * 2)
    return bytes(RATE) + cut(0.2, 2.5) + gap + cut(5.3, 7.9) + gap + cut(0.2, 2.5)


class FixedSTT:
    kind, type, supports_streaming = "stt", "fake", False

    def __init__(self, name: str) -> None:
        self.name = name

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        return Transcript("ask not what your country can do for you")

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class Pool:
    def __init__(self, *providers) -> None:
        self.providers = {p.name: p for p in providers}

    def get(self, name: str):
        return self.providers[name]

    def config(self, name: str) -> ProviderConfig:
        return ProviderConfig(type="fake", kind=self.providers[name].kind)

    def check_secrets(self, names=None) -> None:
        return None


class Agent:
    name = "agent"

    async def reply(self, text, conversation, session) -> str:
        return "Sure."

    async def aclose(self) -> None:
        return None


async def test_hang_on_turn_two_fails_over_in_that_turn_only():
    eleven, piper = FakeTTS("eleven"), FakeTTS("piper")
    pool = Pool(FixedSTT("stt"), eleven, piper)
    policy = ResilienceConfig(first_result_timeout_ms=200, backoff=BackoffConfig(base_ms=5, max_ms=10))
    plan = SessionPlan(
        context=RouteContext(session_id="sess-1"), route="r1", matched=True, reasons=(), pipeline="stt_tts",
        stt=StagePlan("stt", ("stt",)), tts=StagePlan("tts", ("eleven", "piper")), s2s=None, vad=VadConfig(),
        turn=TurnConfig(), agent=AgentConfig(), resilience=policy, barge_in=BargeInConfig(), instructions=None,
        providers={name: pool.config(name) for name in ("stt", "eleven", "piper")},
    )
    sink = MemorySink()
    faults = parse_faults("eleven=hang@turn2", seed=1)
    session = Session(plan, pool, PcmSource(three_turns()), sink, faults=faults, agent=Agent(), env={})
    result = await asyncio.wait_for(session.run(), 60)

    assert [t.index for t in result.turns] == [1, 2, 3] and not result.errors
    assert [t.tts_provider for t in result.turns] == ["eleven", "piper", "eleven"]
    (failover,) = [e for e in result.events if e.type == EventType.FAILOVER]
    assert failover.turn == 2 and failover.data["from_provider"] == "eleven" and failover.route == "r1"
    assert faults.injected == [("eleven", "eleven=hang@turn2", 2)]
    assert (eleven.calls, piper.calls) == (2, 1)  # the injected hang sits in front of eleven on turn 2
    assert sink.duration_s > 0 and {provider_of(AudioChunk(sink.pcm[:320], RATE))} == {"eleven"}


class UnreachableSTT:
    """A streaming STT whose connect is always refused (nothing listens)."""

    kind, type, supports_streaming = "stt", "fake", True

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, 0

    async def open_stream(self, sample_rate=RATE, on_partial=None):
        self.calls += 1
        raise ConnectionRefusedError(111, "Connect call failed")

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        self.calls += 1
        raise ConnectionRefusedError(111, "Connect call failed")

    async def probe(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class SilentSTT(UnreachableSTT):
    """Accepts the stream and the audio, never sends a final transcript."""

    async def open_stream(self, sample_rate=RATE, on_partial=None):
        self.calls += 1

        class Stream:
            async def send(self, pcm: bytes) -> None:
                return None

            async def finish(self) -> Transcript:
                await asyncio.Event().wait()

            async def aclose(self) -> None:
                return None

        return Stream()

    async def transcribe(self, audio: AudioChunk) -> Transcript:
        self.calls += 1
        await asyncio.Event().wait()


async def test_a_failed_stt_turn_never_circles_back_to_a_provider_that_was_never_reachable():
    dg, oai, tts = UnreachableSTT("dg"), SilentSTT("oai"), FakeTTS("tts")
    pool = Pool(dg, oai, tts)
    policy = ResilienceConfig(retries=0, first_result_timeout_ms=200, turn_deadline_ms=600)
    plan = SessionPlan(
        context=RouteContext(session_id="sess-2"), route="r1", matched=True, reasons=(), pipeline="stt_tts",
        stt=StagePlan("stt", ("dg", "oai")), tts=StagePlan("tts", ("tts",)), s2s=None, vad=VadConfig(),
        turn=TurnConfig(), agent=AgentConfig(), resilience=policy, barge_in=BargeInConfig(), instructions=None,
        providers={name: pool.config(name) for name in ("dg", "oai", "tts")},
    )
    session = Session(plan, pool, PcmSource(three_turns()), MemorySink(), agent=Agent(), env={})
    result = await asyncio.wait_for(session.run(), 60)

    assert result.exit_code == 3 and [e.stage for e in result.errors] == ["stt", "stt"]
    # one connect per turn to the unreachable provider, one stream per turn to the silent one: no second
    # pass over the chain after its stream had given every provider the whole utterance
    assert (dg.calls, oai.calls) == (2, 2)
    assert not [e for e in result.events if "buffered utterance" in str(e.data.get("message", ""))]
