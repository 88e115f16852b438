"""How fast the offline engines are here: model loads, Piper speed and first-chunk latency, PocketSphinx speed.

Run: python bench/bench_engines.py [--repeat 3]
Real-time factor (RTF) below = seconds of audio per second of compute (higher is faster; > 1 keeps up).
The decoder-pool line compares one shared decoder (a lock) with a pool of two on parallel turns.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from pathlib import Path

import soundfile as sf

from voicerouter.config.schema import ProviderConfig
from voicerouter.providers.base import BuildContext
from voicerouter.providers.local import piper as piper_engine
from voicerouter.providers.local import pocketsphinx as sphinx_engine
from voicerouter.providers.local import resample_int16

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SENTENCES = (
    "Thank you for calling.",
    "Your order has shipped and it will arrive on Tuesday.",
    "Is there anything else I can help you with today?",
)
REPLY = " ".join(SENTENCES)
SAID = {
    "hello.wav": "Good morning, I would like to check the status of my order.",
    "short_pause_22k.wav": "I would like to order a large pizza with cheese.",
    "two_turns_8k.wav": "My account number is one two three four. I would like to pay my bill today.",
    "weather_44k_stereo.wav": "What is the weather today?",
}


def samples_16k() -> list[tuple[str, bytes]]:
    out = []
    for path in sorted(SAMPLES.glob("*.wav")):
        data, rate = sf.read(path, dtype="int16", always_2d=True)
        out.append((path.name, resample_int16(data.mean(axis=1).astype("<i2").tobytes(), rate, 16000)))
    return out


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


async def first_chunk_latency(tts) -> tuple[float, float]:
    """(seconds to the first chunk, seconds to the last) of one three-sentence reply."""
    started = time.perf_counter()
    first = None
    async for _ in tts.synthesize(REPLY):
        first = first if first is not None else time.perf_counter() - started
    return first or 0.0, time.perf_counter() - started


def recall(said: str, heard: str) -> float:
    import re

    pool = re.findall(r"[a-z']+", heard.lower())
    words = re.findall(r"[a-z']+", said.lower())
    hits = 0
    for word in words:
        if word in pool:
            pool.remove(word)
            hits += 1
    return hits / max(1, len(words))


async def stream_at_real_time(final_pass: bool, pcm: bytes) -> tuple[float, str, int]:
    """Feed 30 ms frames at the speaker's pace; (ms from finish() to final, final text, partials seen)."""
    stt = sphinx_engine.create(
        "bench", "stt", ProviderConfig(type="pocketsphinx", options={"final_pass": final_pass}), BuildContext(env={})
    )
    partials: list[str] = []
    stream = await stt.open_stream(16000, lambda t: partials.append(t.text))
    frame = 960
    started = time.perf_counter()
    for n, offset in enumerate(range(0, len(pcm), frame)):
        await stream.send(pcm[offset : offset + frame])
        await asyncio.sleep(max(0.0, started + (n + 1) * 0.03 - time.perf_counter()))
    asked = time.perf_counter()
    final = await stream.finish()
    took = (time.perf_counter() - asked) * 1000
    await stream.aclose()
    return took, final.text, len(partials)


def pool_throughput(size: int, clips: list[bytes]) -> float:
    """Audio seconds decoded per wall second by two threads sharing a pool of `size` decoders."""
    pool = sphinx_engine.DecoderPool(size)
    for _ in range(size):  # load up front: measure decoding, not loading
        pool.release(pool._new_decoder())
    work = list(clips)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not work:
                    return
                pcm = work.pop()
            decoder = pool.acquire()
            try:
                sphinx_engine._decode(decoder, pcm)
            finally:
                pool.release(decoder)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(len(c) for c in clips) / 32000 / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is reported")
    args = parser.parse_args()

    load_sphinx, _ = timed(sphinx_engine.preload)
    load_piper, _ = timed(piper_engine.preload)
    print(f"model load       pocketsphinx {load_sphinx:.2f} s   piper {load_piper:.2f} s")

    best_rtf = 0.0
    for _ in range(args.repeat):
        pcm, took = timed(lambda: piper_engine.synthesize_pcm(REPLY, 22050))
        best_rtf = max(best_rtf, len(pcm) / 2 / 22050 / took)
    print(f"piper            RTF {best_rtf:.1f}x  ({len(pcm) / 2 / 22050:.1f} s of speech, 3 sentences)")

    tts = piper_engine.create("bench", "tts", ProviderConfig(type="piper"), BuildContext(env={}))
    runs = [asyncio.run(first_chunk_latency(tts)) for _ in range(args.repeat)]
    first, last = min(runs)
    print(f"piper stream     first chunk {first * 1000:.0f} ms, whole reply {last * 1000:.0f} ms")

    clips = samples_16k()
    for name, pcm in clips:
        best = min(timed(lambda pcm=pcm: sphinx_engine.transcribe_pcm(pcm, 16000))[1] for _ in range(args.repeat))
        print(f"pocketsphinx     {name:<24} {len(pcm) / 32000:4.1f} s  RTF {len(pcm) / 32000 / best:.1f}x")

    for final_pass in (False, True):
        mode = "final pass" if final_pass else "live final"
        for name, pcm in clips:
            took, text, partials = asyncio.run(stream_at_real_time(final_pass, pcm))
            print(f"stream {mode:<10} {name:<24} finish->final {took:5.0f} ms  recall "
                  f"{recall(SAID[name], text):4.0%}  {partials} partials  \"{text}\"")

    work = [pcm for _, pcm in clips] * 2
    lock_rate = max(pool_throughput(1, work) for _ in range(args.repeat))
    pool_rate = max(pool_throughput(2, work) for _ in range(args.repeat))
    print(f"decoder pool     2 parallel turns: 1 decoder {lock_rate:.1f}x, 2 decoders {pool_rate:.1f}x real time")


if __name__ == "__main__":
    main()
