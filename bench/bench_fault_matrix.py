"""The fault matrix: 9 faults x 4 stages (STT, TTS, S2S, agent) through real sessions, N runs each.

Every provider is a real client against its wire emulator on 127.0.0.1 (Deepgram STT/TTS, OpenAI
TTS, OpenAI Realtime, OpenAI chat); the stage's primary misbehaves, its fallback is healthy, and
everything runs at the schema's default resilience settings. Faults: `hang` (accepts, never answers),
`stall` (stops mid-stream), `drop` (fails mid-stream), `slow` (first result after 1.5 s), 503, 429
with Retry-After 2 s, 401, `refused` (nothing listens on the port) and `upgrade_hang` (the server
accepts the connection and never answers the request or WebSocket upgrade).

Per cell: turns answered / spoken over all runs, dead air added (each turn's turn-end -> first reply
audio minus the clean run's median; the worst turn of each run; median and max over runs), audio
the final STT provider missed, reply audio heard twice or missing against the clean run (TTS/S2S
replies are tones whose length follows the text, so extra audio is audio heard twice), and runs that
deadlocked (hit the 120 s guard). Mid-reply silence added: within a reply, the longest time a
listener playing it in real time from its first audio hears nothing (audio arriving after what came
before it has played out: a stalled stream and its restart), worst of each run minus the clean
run's, median and max over runs. Figures depend on the machine's load; compare cells within a run.

The agent chain is `[llm (openai-chat), hook (webhook), echo]` and the LLM's reply has three
sentences; its `stall` and `drop` are the emulator's (mid-reply, after half of the words, once the
first sentence was spoken), so the next agent must continue the reply after what was heard.

`--mid-stream-at 0.5s` makes `stall` and `drop` strike once that much audio has streamed (default:
after the first chunk), so a TTS sentence or S2S reply is cut after the caller heard a few words.
`--voice words` gives the emulators' TTS and S2S voice a pause after each word (one tone per word)
instead of one unbroken tone per sentence: speech-like gaps, where resumed replies find word ends.
Each stage's clean run also prints its first-audio latency per turn (the first reply of a voice is
the one whose speaking rate is not learned yet).

Run: python bench/bench_fault_matrix.py [--runs 10] [--turns 4] [--stages stt,tts,s2s,agent]
     [--faults hang,stall,...] [--mid-stream-at 0.5s] [--voice tone|words] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import statistics
import sys
import time
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
    TurnConfig,
    VadConfig,
)
from voicerouter.providers.base import BuildContext
from voicerouter.providers.pool import ProviderPool
from voicerouter.routing.plan import RouteContext, SessionPlan, StagePlan
from voicerouter.session.session import Session
from voicerouter.testing import emulate

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000
ENV = {"KEY": "test-key"}
SAID = "hello there"
FAULTS = ("hang", "stall", "drop", "slow", "error503", "error429", "error401", "refused", "upgrade_hang")
INJECTED = {"hang": "hang", "stall": "stall", "drop": "drop", "slow": "slow:1500ms", "error503": "error:503",
            "error429": "error:429:2", "error401": "error:401"}
PRIMARY = {"stt": "stt-a", "tts": "tts-a", "s2s": "rt-a", "agent": "llm"}
CUTS = ((0.2, 2.5), (5.3, 7.9))  # two utterances of jfk.flac, alternated
AGENT_REPLY = f"Sure. You said: {SAID}. Is there anything else I can do for you?"
SERVER_MID_REPLY = {("agent", "stall"): "stall", ("agent", "drop"): "drop"}  # cut by the chat emulator itself


def fixture(turns: int) -> bytes:
    pcm = read_audio(ROOT / "tests" / "fixtures" / "jfk.flac").pcm
    parts = [bytes(int(0.5 * RATE) * 2)]
    for i in range(turns):
        start, end = CUTS[i % len(CUTS)]
        parts += [pcm[int(start * RATE) * 2:int(end * RATE) * 2], bytes(int(2.0 * RATE) * 2)]
    return b"".join(parts)


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connections are refused
    return port


class AuditSTT:
    """Wraps the session's STT chain: pairs each utterance with the audio its final provider heard."""

    def __init__(self, inner: Any, audit: list[tuple[int, int]]) -> None:
        self.inner, self.audit = inner, audit

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    async def transcribe(self, audio: Any) -> Any:
        result = await self.inner.transcribe(audio)
        self.audit.append((len(audio.pcm), len(audio.pcm)))
        return result

    async def open_stream(self, sample_rate: int = RATE, on_partial: Any = None) -> Any:
        return AuditStream(await self.inner.open_stream(sample_rate, on_partial=on_partial), self.audit)


class AuditStream:
    def __init__(self, inner: Any, audit: list[tuple[int, int]]) -> None:
        self.inner, self.audit, self.sent = inner, audit, 0

    async def send(self, pcm: bytes) -> None:
        self.sent += len(pcm)
        await self.inner.send(pcm)

    async def finish(self) -> Any:
        result = await self.inner.finish()
        self.audit.append((self.sent, self.sent if result.text else 0))
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()


class AuditedSession(Session):
    def __init__(self, *args: Any, audit: list[tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.audit = audit

    async def _build_stage(self, stage: StagePlan) -> Any:
        built = await super()._build_stage(stage)
        return AuditSTT(built, self.audit) if stage.stage == "stt" else built


def plan_for(stage: str, urls: dict[str, str], session_id: str) -> SessionPlan:
    key = "${KEY}"
    providers = {
        "stt-a": ProviderConfig(type="deepgram", kind="stt", api_key=key, base_url=urls["stt-a"]),
        "stt-b": ProviderConfig(type="deepgram", kind="stt", api_key=key, base_url=urls["stt-b"]),
        "tts-a": ProviderConfig(type="deepgram", kind="tts", api_key=key, base_url=urls["tts-a"]),
        "tts-b": ProviderConfig(type="openai", kind="tts", model="tts-1", voice="alloy", api_key=key,
                                base_url=urls["tts-b"] + "/v1"),
        "rt-a": ProviderConfig(type="openai-realtime", api_key=key, base_url=urls["rt-a"] + "/v1"),
        "rt-b": ProviderConfig(type="openai-realtime", api_key=key, base_url=urls["rt-b"] + "/v1"),
    }
    agent = AgentConfig.model_validate([{"type": "openai-chat", "name": "llm", "base_url": urls["llm"] + "/v1",
                                         "api_key": key, "model": "gpt-4o-mini"},
                                        {"type": "webhook", "name": "hook", "url": urls["hook"] + "/reply"}, "echo"])
    s2s = stage == "s2s"
    return SessionPlan(
        context=RouteContext(tenant="bench", session_id=session_id), route="bench", matched=True, reasons=(),
        pipeline="s2s" if s2s else "stt_tts",
        stt=None if s2s else StagePlan("stt", ("stt-a", "stt-b")),
        tts=None if s2s else StagePlan("tts", ("tts-a", "tts-b")),
        s2s=StagePlan("s2s", ("rt-a", "rt-b")) if s2s else None,
        vad=VadConfig(), turn=TurnConfig(), agent=agent, resilience=ResilienceConfig(),  # the defaults
        barge_in=BargeInConfig(), instructions=None, providers=providers,
    )


async def run_cell(stage: str, fault: str | None, audio: bytes, seed: int, label: str,
                   mid_stream_at: str | None = None, voice: str = "tone") -> dict[str, Any]:
    resilience.reset()
    primary = PRIMARY[stage]
    server_fault = {primary: "hang"} if fault == "upgrade_hang" else {}
    if (stage, fault) in SERVER_MID_REPLY:
        server_fault = {primary: SERVER_MID_REPLY[(stage, fault)]}
    kinds = {"stt-a": "deepgram", "stt-b": "deepgram", "tts-a": "deepgram", "tts-b": "openai",
             "rt-a": "openai-realtime", "rt-b": "openai-realtime", "llm": "openai-chat", "hook": "webhook"}
    replies = {"llm": AGENT_REPLY, "hook": AGENT_REPLY} if stage == "agent" else {}
    async with _Emulators(kinds, server_fault, replies, voice) as urls:
        if fault == "refused":
            urls[primary] = f"http://127.0.0.1:{closed_port()}"
        plan = plan_for(stage, urls, f"bench-{label}")
        pool = ProviderPool(plan.providers, BuildContext(env=ENV))
        injected = f"{primary}={INJECTED[fault]}" if fault in INJECTED and not server_fault else None
        if injected and mid_stream_at and fault in ("stall", "drop"):
            injected += f"@{mid_stream_at}"
        faults = resilience.parse_faults(injected, seed) if injected else None
        audit: list[tuple[int, int]] = []
        sink = TimedSink()
        session = AuditedSession(plan, pool, PcmSource(audio), sink, faults=faults, env=ENV, audit=audit)
        session.bus.subscribe(lambda e: sink.reply_starts() if e.type.value == "tts_start" else None)
        deadlocked = False
        try:
            result = await asyncio.wait_for(session.run(), 120)
        except TimeoutError:
            deadlocked, result = True, None
        finally:
            await pool.aclose()
    if result is None:
        return {"deadlocked": True}
    return {
        "deadlocked": deadlocked,
        "spoken": sum(1 for e in result.events if e.type.value == "turn_end"),
        "answered": sum(1 for t in result.turns if t.reply_audio_s > 0),
        "first_audio_ms": [t.wall_latency_ms.get("tts_first_audio") for t in result.turns],
        "mid_reply_silence_ms": sink.worst_silence_ms(),
        "reply_audio_s": [round(t.reply_audio_s, 3) for t in result.turns],
        "replies": [t.reply for t in result.turns],
        "stt_audio_missed_s": sum(max(0, a - b) for a, b in audit) / 2 / RATE,
        "failovers": sum(1 for e in result.events if e.type.value == "failover"),
        "errors": [e.message for e in result.errors],
    }


class TimedSink(MemorySink):
    """Keeps the audio and when each piece was written, to tell how long a real-time listener would
    hear silence inside a reply: playback starts at a reply's first audio and runs dry when audio
    comes later than the audio before it has taken to play."""

    def __init__(self) -> None:
        super().__init__()
        self.replies: list[list[tuple[float, float]]] = []

    def reply_starts(self) -> None:
        self.replies.append([])

    async def write(self, chunk: Any) -> None:
        if chunk.pcm and self.replies:
            self.replies[-1].append((time.monotonic(), chunk.duration_s))
        await super().write(chunk)

    def worst_silence_ms(self) -> float:
        worst = 0.0
        for writes in self.replies:
            playing_until: float | None = None
            for at, seconds in writes:
                if playing_until is not None and at > playing_until:
                    worst = max(worst, at - playing_until)  # the listener hears nothing meanwhile
                playing_until = (at if playing_until is None else max(at, playing_until)) + seconds
        return worst * 1000


class _Emulators:
    def __init__(self, kinds: dict[str, str], faults: dict[str, str], replies: dict[str, str],
                 voice: str = "tone") -> None:
        self.kinds, self.faults, self.replies, self.voice = kinds, faults, replies, voice
        self._stack: Any = None

    async def __aenter__(self) -> dict[str, str]:
        import contextlib

        self._stack = contextlib.AsyncExitStack()
        urls = {}
        for name, kind in self.kinds.items():
            emu = await self._stack.enter_async_context(
                emulate(kind, api_key="test-key", transcript=SAID, faults=self.faults.get(name),
                        tts_engine=self.voice))
            if name in self.replies:
                emu.state.reply = self.replies[name]
            urls[name] = emu.url
        return urls

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


def tone_seconds(reply: str, voice: str = "tone") -> float:
    """How long the emulators' TTS speaks a reply: 0.06 s per character of each sentence (tone), or
    per character of each word and one more for the pause after it (words)."""
    from voicerouter.session.sentences import split_sentences

    if voice == "words":
        return sum(0.06 * (len(word) + 1) for word in reply.split()) or 0.06
    return sum(min(10.0, 0.06 * max(1, len(sentence))) for sentence in split_sentences(reply))


def summarize(stage: str, fault: str, runs: list[dict[str, Any]], clean: dict[str, Any],
              voice: str = "tone") -> dict[str, Any]:
    base = statistics.median([v for v in clean["first_audio_ms"] if v is not None] or [0.0])
    ok = [r for r in runs if not r.get("deadlocked")]
    clean_silence = clean.get("mid_reply_silence_ms", 0.0)
    silences = [max(0.0, r["mid_reply_silence_ms"] - clean_silence) for r in ok]
    worst = []
    twice = lost = 0.0
    for r in ok:
        added = [max(0.0, v - base) for v in r["first_audio_ms"] if v is not None]
        worst.append(max(added) if added else float("nan"))
        for reply, got, clean_reply, clean_s in zip(r["replies"], r["reply_audio_s"], clean["replies"],
                                                    clean["reply_audio_s"], strict=False):
            # a fallback may word the reply differently (echo adds a period): expect that reply's tone
            want = clean_s if reply == clean_reply else tone_seconds(reply or "", voice)
            twice += max(0.0, got - want)
            lost += max(0.0, want - got) if got > 0 else 0.0
    return {
        "stage": stage, "fault": fault, "runs": len(runs), "deadlocked": len(runs) - len(ok),
        "answered": sum(r["answered"] for r in ok), "spoken": sum(r["spoken"] for r in ok),
        "dead_air_ms_median": round(statistics.median(worst), 0) if worst else None,
        "dead_air_ms_max": round(max(worst), 0) if worst else None,
        "mid_reply_silence_ms_median": round(statistics.median(silences), 0) if silences else None,
        "mid_reply_silence_ms_max": round(max(silences), 0) if silences else None,
        "stt_audio_missed_s": round(sum(r["stt_audio_missed_s"] for r in ok), 3),
        "heard_twice_s": round(twice, 3), "reply_audio_missing_s": round(lost, 3),
        "errors": sorted({e for r in ok for e in r["errors"]})[:3],
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--stages", default="stt,tts,s2s,agent")
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--mid-stream-at", default=None, help="stall/drop after this much streamed audio, e.g. 0.5s")
    parser.add_argument("--voice", choices=("tone", "words"), default="tone",
                        help="the emulators' voice: one tone per sentence, or per word with pauses")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    audio = fixture(args.turns)
    rows = []
    started = time.monotonic()
    for stage in args.stages.split(","):
        clean = await run_cell(stage, None, audio, args.seed, f"{stage}-clean", voice=args.voice)
        if not args.json:
            print(f"{stage:5} clean        first audio per turn "
                  f"{[round(v) if v is not None else None for v in clean['first_audio_ms']]} ms", flush=True)
        for fault in args.faults.split(","):
            runs = [await run_cell(stage, fault, audio, args.seed + i, f"{stage}-{fault}-{i}", args.mid_stream_at,
                                   args.voice) for i in range(args.runs)]
            row = summarize(stage, fault, runs, clean, args.voice)
            row["clean_first_audio_ms"] = [round(v) if v is not None else None for v in clean["first_audio_ms"]]
            rows.append(row)
            if not args.json:
                print(f"{stage:5} {fault:12} answered {row['answered']:3}/{row['spoken']:<3} "
                      f"dead air added median {row['dead_air_ms_median']} ms max {row['dead_air_ms_max']} ms  "
                      f"mid-reply silence added median {row['mid_reply_silence_ms_median']} ms "
                      f"max {row['mid_reply_silence_ms_max']} ms  "
                      f"stt audio missed {row['stt_audio_missed_s']} s  heard twice {row['heard_twice_s']} s  "
                      f"reply audio missing {row['reply_audio_missing_s']} s  deadlocked {row['deadlocked']}"
                      + (f"  errors {row['errors']}" if row["errors"] else ""), flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{len(rows)} cells x {args.runs} runs of {args.turns} turns in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
