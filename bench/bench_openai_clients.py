"""Client overhead of the OpenAI providers over loopback emulators: what voicerouter itself adds per call.

Measures batch STT round trips (WAV encode + multipart + JSON), TTS time to first audio chunk, and
Realtime connect (handshake + session.update) and time to first audio of a turn, with a shared
connection pool versus a fresh client per call. The emulators answer instantly (fixed transcript,
tone audio), so the figures are transport + client cost, not vendor latency.

Run: python bench/bench_openai_clients.py [--calls 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from voicerouter.config.schema import ProviderConfig
from voicerouter.providers.base import AudioChunk, BuildContext, Conversation
from voicerouter.providers.openai import create
from voicerouter.providers.openai_realtime import create as create_realtime
from voicerouter.testing.server import emulate, tone

KEY = "bench-key"
ENV = {"BENCH_KEY": KEY}


def summary(name: str, samples: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(f"{name:<44} median {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms   (n={len(ms)})")


def cfg(kind: str, url: str) -> ProviderConfig:
    return ProviderConfig(type="openai", kind=kind, api_key="${BENCH_KEY}", base_url=url + "/v1")


async def bench_rest(calls: int) -> None:
    utterance = AudioChunk(tone(1.0, 16000), 16000)
    async with emulate("openai", api_key=KEY) as emu:
        stt = create("stt", "stt", cfg("stt", emu.url), BuildContext(env=ENV))
        pooled = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await stt.transcribe(utterance)
            pooled.append(time.perf_counter() - t0)
        await stt.aclose()
        summary("STT 1 s utterance, pooled client", pooled)

        fresh = []
        for _ in range(calls):
            t0 = time.perf_counter()
            one = create("stt", "stt", cfg("stt", emu.url), BuildContext(env=ENV))
            await one.transcribe(utterance)
            fresh.append(time.perf_counter() - t0)
            await one.aclose()
        summary("STT 1 s utterance, new client per call", fresh)

        tts = create("tts", "tts", cfg("tts", emu.url), BuildContext(env=ENV))
        first, chunks = [], []
        for _ in range(calls):
            t0 = time.perf_counter()
            n = 0
            async for _chunk in tts.synthesize("Hello, how can I help you today?"):
                if n == 0:
                    first.append(time.perf_counter() - t0)
                n += 1
            chunks.append(n)
        await tts.aclose()
        summary("TTS time to first audio chunk, pooled", first)
        print(f"{'TTS chunks per sentence':<44} median {statistics.median(chunks):7.0f}")


async def bench_realtime(calls: int) -> None:
    pcm = tone(1.0, 16000)
    async with emulate("openai-realtime", api_key=KEY) as emu:
        config = ProviderConfig(type="openai-realtime", api_key="${BENCH_KEY}", base_url=emu.url + "/v1")
        provider = create_realtime("rt", "s2s", config, BuildContext(env=ENV))
        connects, first_audio = [], []
        for _ in range(calls):
            t0 = time.perf_counter()
            session = await provider.connect(instructions="Be brief.", history=Conversation())
            connects.append(time.perf_counter() - t0)
            for i in range(0, len(pcm), 640):
                await session.send_audio(pcm[i : i + 640], 16000)
            t0 = time.perf_counter()
            async for event in session.respond():
                if event.type == "audio" and len(first_audio) < len(connects):
                    first_audio.append(time.perf_counter() - t0)
            await session.aclose()
        summary("Realtime connect (handshake + session.update)", connects)
        summary("Realtime commit -> first audio delta", first_audio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(bench_rest(args.calls))
    asyncio.run(bench_realtime(max(5, args.calls // 3)))


if __name__ == "__main__":
    main()
