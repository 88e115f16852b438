"""Resilience under faults: a multi-turn replay through a real session, with and without injected faults.

Providers are the Deepgram and OpenAI clients against their wire emulators on 127.0.0.1. STT fails
over between two Deepgram endpoints whose emulators transcribe with PocketSphinx, so the clean and
faulted runs decode the same way and any audio a failover loses shows up as lost words. The faulted run has
the primary TTS hanging, the primary STT dropping its stream mid-utterance and 30 % random 503s on
every provider. Prints turns answered / turns spoken, words lost against the clean run, and the
dead air each failover added (time spent on the failing provider before the switch; median, max).

Run: python bench/bench_resilience.py [--turns 6] [--seed 7] [--retries 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from voicerouter import resilience
from voicerouter.audio.io import read_audio
from voicerouter.audio.sink import MemorySink
from voicerouter.audio.source import PcmSource
from voicerouter.config.schema import (
    AgentConfig,
    BargeInConfig,
    ProviderConfig,
    ResilienceConfig,
    StagePolicy,
    TurnConfig,
    VadConfig,
)
from voicerouter.providers.base import BuildContext, Conversation, SessionInfo
from voicerouter.providers.pool import ProviderPool
from voicerouter.routing.plan import RouteContext, SessionPlan, StagePlan
from voicerouter.session.session import Session
from voicerouter.testing import emulate

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000
ENV = {"DG_KEY": "test-key", "OAI_KEY": "test-key"}
# 503s first (drawn per call), then the primary's standing fault for the calls the 503 spared
FAULTS = ("dg-stt=error:503@0.3,dg-stt=drop@1s,dg-tts=error:503@0.3,dg-tts=hang,"
          "dg2-stt=error:503@0.3,oai-tts=error:503@0.3")
# (start, end) seconds of jfk.flac: "and so my fellow americans", "what your country can do for you"
CUTS = ((0.2, 2.5), (5.3, 7.9))


def fixture(turns: int) -> bytes:
    chunk = read_audio(ROOT / "tests" / "fixtures" / "jfk.flac")
    assert chunk.sample_rate == RATE, "read_audio returns pipeline-rate audio"
    pcm = chunk.pcm
    silence = bytes(int(2.0 * RATE) * 2)
    parts = [bytes(int(0.5 * RATE) * 2)]
    for i in range(turns):
        start, end = CUTS[i % len(CUTS)]
        parts += [pcm[int(start * RATE) * 2 : int(end * RATE) * 2], silence]
    return b"".join(parts)


class _RecordingStream:
    def __init__(self, inner: Any, log: list[tuple[str, bytes]], name: str) -> None:
        self.inner, self.log, self.name, self.sent = inner, log, name, bytearray()

    async def send(self, pcm: bytes) -> None:
        await self.inner.send(pcm)
        self.sent += pcm

    async def finish(self) -> Any:
        result = await self.inner.finish()
        self.log.append((self.name, bytes(self.sent)))  # only a stream that delivered its final counts
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()


class _RecordingSTT:
    """Records the audio behind every final transcript, to check that failover lost none of it."""

    def __init__(self, inner: Any, log: list[tuple[str, bytes]]) -> None:
        self.inner, self.log = inner, log

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    async def transcribe(self, audio: Any) -> Any:
        result = await self.inner.transcribe(audio)
        self.log.append((self.inner.name, audio.pcm))
        return result

    async def open_stream(self, sample_rate: int = RATE, on_partial: Any = None) -> Any:
        return _RecordingStream(await self.inner.open_stream(sample_rate, on_partial=on_partial), self.log,
                                self.inner.name)


class RecordingPool(ProviderPool):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heard: list[tuple[str, bytes]] = []  # (provider, utterance audio) per final transcript
        self._wrapped: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        provider = super().get(name)
        if getattr(provider, "kind", None) != "stt":
            return provider
        if name not in self._wrapped:
            self._wrapped[name] = _RecordingSTT(provider, self.heard)
        return self._wrapped[name]


class _SessionSideStream:
    def __init__(self, inner: Any, owner: _SessionSideSTT) -> None:
        self.inner, self.owner, self.sent = inner, owner, bytearray()

    async def send(self, pcm: bytes) -> None:
        self.sent += pcm
        await self.inner.send(pcm)

    async def finish(self) -> Any:
        return await self.owner.pair(bytes(self.sent), self.inner.finish())

    async def aclose(self) -> None:
        await self.inner.aclose()


class _SessionSideSTT:
    """The STT chain as the session sees it: pairs each utterance the session hands over with the
    audio the provider that produced its final transcript received (None when none did)."""

    def __init__(self, inner: Any, heard: list[tuple[str, bytes]], pairs: list[tuple[bytes, bytes | None]]) -> None:
        self.inner, self.heard, self.pairs = inner, heard, pairs
        self.failed = 0

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    async def pair(self, utterance: bytes, final: Any) -> Any:
        before = len(self.heard)
        try:
            result = await final
        except BaseException:
            self.failed += 1  # the session may still transcribe the utterance another way
            raise
        self.pairs.append((utterance, self.heard[-1][1] if len(self.heard) > before else None))
        return result

    async def transcribe(self, audio: Any) -> Any:
        return await self.pair(audio.pcm, self.inner.transcribe(audio))

    async def open_stream(self, sample_rate: int = RATE, on_partial: Any = None) -> Any:
        return _SessionSideStream(await self.inner.open_stream(sample_rate, on_partial=on_partial), self)


class AuditedSession(Session):
    def __init__(self, *args: Any, heard: list[tuple[str, bytes]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heard = heard
        self.pairs: list[tuple[bytes, bytes | None]] = []
        self.stt: _SessionSideSTT | None = None

    async def _build_stage(self, stage: StagePlan) -> Any:
        built = await super()._build_stage(stage)
        if stage.stage != "stt":
            return built
        self.stt = _SessionSideSTT(built, self.heard, self.pairs)
        return self.stt


class EchoAgent:
    name = "echo"

    async def reply(self, text: str, conversation: Conversation, session: SessionInfo) -> str:
        return f"You said {text}." if text else "Sorry?"

    async def aclose(self) -> None:
        return None


def plan(dg: str, dg2: str, oai: str, session_id: str, retries: int = 1) -> tuple[SessionPlan, dict[str, ProviderConfig]]:
    providers = {
        "dg-stt": ProviderConfig(type="deepgram", kind="stt", api_key="${DG_KEY}", base_url=dg),
        "dg2-stt": ProviderConfig(type="deepgram", kind="stt", api_key="${DG_KEY}", base_url=dg2),
        "dg-tts": ProviderConfig(type="deepgram", kind="tts", api_key="${DG_KEY}", base_url=dg),
        "oai-tts": ProviderConfig(type="openai", kind="tts", model="tts-1", voice="alloy", api_key="${OAI_KEY}",
                                  base_url=oai + "/v1"),
    }
    # schema defaults (800 ms to first result, 600 ms stall), but STT gets room for PocketSphinx
    # decoding inside the emulators, which can run slower than real time on a busy CPU
    policy = ResilienceConfig(retries=retries,
                              stt=StagePolicy(first_result_timeout_ms=15000, turn_deadline_ms=40000))
    return SessionPlan(
        context=RouteContext(tenant="bench", session_id=session_id), route="bench", matched=True, reasons=(),
        pipeline="stt_tts", stt=StagePlan("stt", ("dg-stt", "dg2-stt")), tts=StagePlan("tts", ("dg-tts", "oai-tts")),
        s2s=None, vad=VadConfig(), turn=TurnConfig(), agent=AgentConfig(), resilience=policy,
        barge_in=BargeInConfig(), instructions=None, providers=providers,
    ), providers


async def run_once(audio: bytes, faults: str | None, seed: int, label: str, retries: int) -> dict[str, Any]:
    resilience.reset()
    async with (
        emulate("deepgram", transcript=None) as dg,
        emulate("deepgram", transcript=None) as dg2,
        emulate("openai") as oai,
    ):
        session_plan, providers = plan(dg.url, dg2.url, oai.url, f"bench-{label}", retries)
        pool = RecordingPool(providers, BuildContext(env=ENV))
        plan_faults = resilience.parse_faults(faults, seed) if faults else None
        try:
            session = AuditedSession(session_plan, pool, PcmSource(audio), MemorySink(), faults=plan_faults, env=ENV,
                                     agent=EchoAgent(), heard=pool.heard)
            result = await asyncio.wait_for(session.run(), 300)
        finally:
            await pool.aclose()
    events = [e.to_dict() for e in result.events]
    failovers = [e for e in events if e["type"] == "failover"]
    return {
        "label": label,
        "turns_spoken": sum(1 for e in events if e["type"] == "turn_end"),
        "turns_answered": sum(1 for t in result.turns if t.reply_audio_s > 0),
        "transcripts": [t.transcript or "" for t in result.turns],
        "pairs": session.pairs,
        "stt_chain_failures": session.stt.failed if session.stt else 0,
        "failovers": len(failovers),
        "failovers_by_stage": dict(Counter(e["stage"] for e in failovers)),
        "retries": sum(1 for e in events if e["type"] == "retry"),
        "restarted_sentences": sum(1 for e in failovers if e.get("restarted_sentence")),
        "dead_air_ms": {stage: [e["elapsed_ms"] for e in failovers if e["stage"] == stage]
                        for stage in ("stt", "tts")},
        "voice_to_voice_ms": [t.wall_latency_ms.get("voice_to_voice") for t in result.turns],
        "errors": [e.message for e in result.errors],
        "injected": len(plan_faults.injected) if plan_faults else 0,
    }


def audio_lost(pairs: list[tuple[bytes, bytes | None]]) -> tuple[int, float, int]:
    """(utterances heard in full, seconds missing, words lost): what the session handed to the STT
    chain against what the provider that produced each final transcript actually received.

    Words are counted with a deterministic batch PocketSphinx decode of both, only for utterances
    whose audio differs (identical audio loses no words).
    """
    from voicerouter.providers.local.pocketsphinx import transcribe_pcm

    full, missing_s, words = 0, 0.0, 0
    for want, heard in pairs:
        got = heard or b""
        if got == want:
            full += 1
            continue
        missing_s += max(0, len(want) - len(got)) / 2 / RATE
        want_words = Counter(transcribe_pcm(want, RATE).split())
        got_words = Counter(transcribe_pcm(got, RATE).split()) if got else Counter()
        words += sum((want_words - got_words).values())
    return full, missing_s, words


def stats(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"median {statistics.median(values):.0f} ms, max {max(values):.0f} ms (n={len(values)})"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--retries", type=int, default=1, help="resilience.retries (default 1, as the schema)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # the emulators log a traceback each time a client gives up on a hung response: expected here
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    audio = fixture(args.turns)
    clean = await run_once(audio, None, args.seed, "clean", args.retries)
    faulted = await run_once(audio, FAULTS, args.seed, "faulted", args.retries)
    for run in (clean, faulted):
        pairs = run.pop("pairs")
        full, missing_s, words = audio_lost(pairs)
        run.update(utterances=len(pairs), utterances_in_full=full, audio_lost_s=round(missing_s, 3),
                   words_lost=words)
    if args.json:
        print(json.dumps({"clean": clean, "faulted": faulted, "faults": FAULTS, "seed": args.seed}, indent=2))
        return 0
    print(f"fixture: {args.turns} utterances from jfk.flac, {len(audio) / 2 / RATE:.1f} s; seed {args.seed}; "
          f"retries {args.retries}")
    print(f"faults: {FAULTS}")
    for run in (clean, faulted):
        v2v = [v for v in run["voice_to_voice_ms"] if v is not None]
        print(f"\n[{run['label']}]")
        print(f"  turns answered / spoken: {run['turns_answered']} / {run['turns_spoken']}")
        print(f"  utterances the final STT provider heard in full: {run['utterances_in_full']} / {run['utterances']}; "
              f"audio lost: {run['audio_lost_s']:.2f} s; words lost: {run['words_lost']}; "
              f"STT chain calls that failed outright: {run['stt_chain_failures']}")
        print(f"  faults injected: {run['injected']}; failovers: {run['failovers']} {run['failovers_by_stage']}; "
              f"retries: {run['retries']}; sentences restarted: {run['restarted_sentences']}")
        for stage, values in run["dead_air_ms"].items():
            print(f"  {stage} dead air added per failover: {stats(values)}")
        print(f"  voice-to-voice per turn: {stats(v2v)}")
        if run["errors"]:
            print(f"  session errors: {run['errors']}")
    print("\ntranscripts (clean | faulted):")
    for a, b in zip(clean["transcripts"], faulted["transcripts"], strict=False):
        print(f"  {a!r} | {b!r}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
