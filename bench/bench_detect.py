"""How fast VAD + turn detection run on one core, on real speech (the JFK clip repeated to ~60 s).

Run: python bench/bench_detect.py [--seconds 60] [--frame-ms 30] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from voicerouter.audio.convert import frames, resample
from voicerouter.audio.io import read_audio
from voicerouter.config.schema import TurnConfig, VadConfig
from voicerouter.detect.turn import TurnDetector
from voicerouter.detect.vad import VoiceActivityDetector

CLIP = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "jfk.flac"


def best_of(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio length to process")
    parser.add_argument("--frame-ms", type=int, default=30, choices=(10, 20, 30))
    parser.add_argument("--repeat", type=int, default=5, help="runs; the fastest is reported")
    args = parser.parse_args()

    clip = read_audio(CLIP).pcm
    copies = max(1, round(args.seconds / (len(clip) / 32000)))
    pcm = clip * copies
    audio_s = len(pcm) / 32000
    chunks = list(frames(pcm, args.frame_ms))
    vad_config, turn_config = VadConfig(frame_ms=args.frame_ms), TurnConfig()
    turns: list[int] = []

    def vad_only() -> None:
        vad = VoiceActivityDetector(vad_config)
        for f in chunks:
            vad.process(f)

    def vad_and_turn() -> None:
        vad, td = VoiceActivityDetector(vad_config), TurnDetector(turn_config)
        n = 0
        for f in chunks:
            d = td.feed(vad.process(f))
            n += bool(d and not d.discarded)
        turns.append(n)

    def resample_44k() -> None:
        resample(pcm, 16000, 44100)

    print(f"audio: {audio_s:.1f} s of speech ({copies} x {CLIP.name}), {len(chunks)} frames of {args.frame_ms} ms")
    for name, fn in (("vad", vad_only), ("vad+turn", vad_and_turn), ("resample 16k->44.1k", resample_44k)):
        elapsed = best_of(args.repeat, fn)
        extra = f", {len(chunks) / elapsed:,.0f} frames/s" if name != "resample 16k->44.1k" else ""
        print(f"{name}: {audio_s / elapsed:,.0f}x real time ({audio_s:.1f} s audio in {elapsed:.3f} s{extra})")
    print(f"turns found: {turns[-1]}")


if __name__ == "__main__":
    main()
