"""Fast (lockstep) sessions decide turn ends on the audio clock: partials whose arrival time
varies never change a turn's end reason or delay (the `STTStream.flush` contract)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from session_fakes import EchoAgent, FakePool, FakeSTT, FakeTTS, make_plan, two_turns

from voicerouter.audio.sink import MemorySink
from voicerouter.audio.source import PcmSource
from voicerouter.providers.base import Transcript
from voicerouter.session.session import Session

PIECE = 16000 * 2 // 5  # a partial every 200 ms of audio
WORDS = "what is the weather like today".split()



class LateStream:
    """Partials at fixed points of the audio, delivered after a random delay (like an engine thread
    or a network would), without `flush`: nobody can tell when they are all in."""

    def __init__(self, stt: JitterSTT, on_partial: Any) -> None:
        self.stt = stt
        self.on_partial = on_partial
        self.sent = 0
        self.delivered = 0
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def send(self, pcm: bytes) -> None:
        loop = asyncio.get_running_loop()
        before, self.sent = self.sent, self.sent + len(pcm)
        for k in range(before // PIECE + 1, self.sent // PIECE + 1):
            # The k-th partial ends like a finished sentence from the fourth on: early on, the
            # detector would wait less (complete_sentence) than on silence alone.
            text = " ".join(WORDS[: min(k, len(WORDS))]) + ("." if k >= 4 else "")
            loop.call_later(self.stt.rng.uniform(0, 0.03), self._deliver, k, text)

    def _deliver(self, k: int, text: str) -> None:
        self.on_partial(Transcript(text, is_final=False, provider=self.stt.name))
        self.delivered = max(self.delivered, k)
        for due, waiter in list(self.waiters):
            if due <= self.delivered and not waiter.done():
                waiter.set_result(None)

    async def finish(self) -> Transcript:
        return Transcript(self.stt._next(), provider=self.stt.name)

    async def aclose(self) -> None:
        return None


class FlushableStream(LateStream):
    async def flush(self) -> None:
        due = self.sent // PIECE
        if due <= self.delivered:
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append((due, waiter))
        await waiter


class JitterSTT(FakeSTT):
    def __init__(self, seed: int, *, flushable: bool) -> None:
        super().__init__("stt-a", ["what is the weather like today"], streaming=True)
        self.rng = random.Random(seed)
        self.flushable = flushable

    async def open_stream(self, sample_rate: int = 16000, on_partial: Any = None) -> LateStream:
        return (FlushableStream if self.flushable else LateStream)(self, on_partial)


async def turn_ends(seed: int, *, flushable: bool, realtime: bool = False) -> list[tuple[str, float, float]]:
    pool = FakePool({"stt-a": JitterSTT(seed, flushable=flushable), "tts-a": FakeTTS("tts-a")})
    plan = make_plan(pool)
    session = Session(plan, pool, PcmSource(two_turns(), realtime=realtime), MemorySink(), agent=EchoAgent())
    result = await asyncio.wait_for(session.run(), 60)
    return [(t.reason or "", t.end_s, t.latency_ms["turn_end_delay"]) for t in result.turns]


async def test_flushed_partials_steer_turn_ends_the_same_way_every_run():
    runs = [await turn_ends(seed, flushable=True) for seed in range(4)]
    assert all(run == runs[0] for run in runs)
    # The partials were read: a finished sentence ends the turn sooner than silence alone would.
    assert [reason for reason, _, _ in runs[0]] == ["complete_sentence", "complete_sentence"]


async def test_partials_of_streams_without_flush_do_not_steer_fast_sessions():
    runs = [await turn_ends(seed, flushable=False) for seed in range(4)]
    assert all(run == runs[0] for run in runs)
    assert [reason for reason, _, _ in runs[0]] == ["silence", "silence"]
