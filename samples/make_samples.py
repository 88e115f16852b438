"""Regenerate the speech fixtures in this folder with the offline Piper voice (joe, en_US).

    python samples/make_samples.py           # write the WAVs
    python samples/make_samples.py --check   # also print what Whisper (the offline route's STT) hears in each

The fixtures are deterministic enough for tests (Piper's noise is seeded per run by onnxruntime,
so bytes may differ slightly between machines; the words do not).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from voicerouter.providers.local import piper as piper_engine

HERE = Path(__file__).resolve().parent
LEAD_S = 0.4  # silence before the first word, so a VAD sees speech start cleanly
TAIL_S = 0.8  # silence after the last word, so a turn detector can end the turn
MAX_BYTES = 300_000  # fixtures live in the repository: keep each one small


@dataclass(frozen=True)
class Sample:
    file: str
    rate: int
    channels: int
    parts: tuple[str | float, ...]  # sentences and pauses (seconds of silence) in order
    lead_s: float = LEAD_S
    tail_s: float = TAIL_S

    @property
    def text(self) -> str:
        return " ".join(p for p in self.parts if isinstance(p, str))


SAMPLES = (
    Sample("hello.wav", 16000, 1, ("Good morning, I would like to check the status of my order.",)),
    # 44.1 kHz stereo costs 176 KB a second: a short sentence and short margins keep it under 300 KB.
    Sample("weather_44k_stereo.wav", 44100, 2, ("What is the weather today?",), lead_s=0.2, tail_s=0.25),
    # Telephone band (first picked for PocketSphinx's 16 kHz model, which lost most other wordings at 8 kHz).
    Sample(
        "two_turns_8k.wav", 8000, 1,
        ("My account number is one two three four.", 2.0, "I would like to pay my bill today."),
    ),
    Sample("short_pause_22k.wav", 22050, 1, ("I would like to order", 0.25, "a large pizza with cheese.")),
)


def speak(text: str) -> np.ndarray:
    """Piper's float audio at its native 22.05 kHz, trimmed of leading/trailing near-silence."""
    pcm = np.frombuffer(piper_engine.synthesize_pcm(text, 22050), dtype="<i2").astype(np.float32) / 32768
    loud = np.flatnonzero(np.abs(pcm) > 0.01)
    return pcm[loud[0] : loud[-1] + 1] if loud.size else pcm


def render(sample: Sample) -> np.ndarray:
    native = 22050
    pieces = [np.zeros(int(sample.lead_s * native), np.float32)]
    for part in sample.parts:
        pieces.append(np.zeros(int(part * native), np.float32) if isinstance(part, float) else speak(part))
    pieces.append(np.zeros(int(sample.tail_s * native), np.float32))
    audio = np.concatenate(pieces) * 0.8  # headroom
    if sample.rate != native:
        audio = soxr.resample(audio, native, sample.rate)
    if sample.channels == 2:
        # Not identical channels: the right one slightly quieter, as a real stereo recording would be.
        audio = np.stack([audio, audio * 0.9], axis=1)
    return audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="transcribe each file with Whisper")
    args = parser.parse_args()
    for sample in SAMPLES:
        path = HERE / sample.file
        sf.write(path, render(sample), sample.rate, subtype="PCM_16")
        if path.stat().st_size >= MAX_BYTES:
            raise SystemExit(f"{sample.file} is {path.stat().st_size} bytes; shorten its text or margins")
        line = f"{sample.file}: {sample.rate} Hz, {sample.channels} ch, {path.stat().st_size // 1024} KB"
        if args.check:
            from voicerouter.providers.local.whisper import transcribe_pcm

            data, rate = sf.read(path, dtype="int16", always_2d=True)
            heard = transcribe_pcm(data.mean(axis=1).astype("<i2").tobytes(), rate)
            line += f"\n  said:  {sample.text}\n  heard: {heard}"
        print(line)


if __name__ == "__main__":
    main()
