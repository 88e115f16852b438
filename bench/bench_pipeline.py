"""Where a replayed turn's time goes on the local engines (PocketSphinx -> echo -> Piper), per stage.

Replays the sample recordings through the built-in offline route and reads the stage times from
the session events: VAD + turn detection per second of audio, STT final (turn end -> final
transcript), agent, TTS first audio (synthesis start -> first chunk), TTS total (synthesis start ->
reply done; with --realtime that includes playing the reply at real-time pace), and the turn end
-> first reply audio the user waits for. Medians (and maxima) over every turn of every run.

Run: python bench/bench_pipeline.py [--repeat 3] [--realtime] [FILE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from voicerouter.audio.convert import frames
from voicerouter.audio.io import read_audio
from voicerouter.config.loader import builtin_routes
from voicerouter.detect.turn import TurnDetector
from voicerouter.detect.vad import VoiceActivityDetector
from voicerouter.routing.plan import RouteContext
from voicerouter.session.events import EventType
from voicerouter.session.replay import replay_files

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def detect_ms_per_audio_s(paths: list[Path]) -> float:
    """Milliseconds of CPU that VAD + turn detection take per second of audio (best of 3)."""
    plan = builtin_routes().resolve(RouteContext())
    audio = [read_audio(p).pcm for p in paths]
    seconds = sum(len(pcm) / 32000 for pcm in audio)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for pcm in audio:
            vad, turns = VoiceActivityDetector(plan.vad), TurnDetector(plan.turn)
            for frame in frames(pcm, plan.vad.frame_ms):
                turns.feed(vad.process(frame))
        best = min(best, time.perf_counter() - t0)
    return best * 1000 / seconds


def stage_times(results) -> dict[str, list[float]]:
    """Per-turn stage durations (ms) from each session's events."""
    out: dict[str, list[float]] = {k: [] for k in ("stt_final", "agent", "tts_first", "tts_total", "first_audio")}
    for result in results:
        if result.session is None:
            continue
        for turn in result.session.turns:
            lat = turn.wall_latency_ms
            for key, name in (("stt_final", "stt_final"), ("agent", "agent"), ("tts_first_audio", "first_audio")):
                if key in lat:
                    out[name].append(lat[key])
        marks: dict[tuple[int | None, str], float] = {}
        for event in result.session.events:
            if event.type in (EventType.TTS_START, EventType.TTS_FIRST_AUDIO, EventType.TTS_DONE):
                marks.setdefault((event.turn, str(event.type)), event.t)
        for (turn, kind), t in marks.items():
            if kind != "tts_start":
                continue
            if (turn, "tts_first_audio") in marks:
                out["tts_first"].append((marks[(turn, "tts_first_audio")] - t) * 1000)
            if (turn, "tts_done") in marks:
                out["tts_total"].append((marks[(turn, "tts_done")] - t) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="audio files (default: samples/*.wav)")
    parser.add_argument("--repeat", type=int, default=3, help="replays of the whole set")
    parser.add_argument("--realtime", action="store_true", help="feed audio at real-time pace")
    args = parser.parse_args()
    paths = args.files or sorted(SAMPLES.glob("*.wav"))

    table = builtin_routes()
    results = []
    wall = 0.0
    for i in range(args.repeat):
        t0 = time.perf_counter()
        # Models load before the first session (preload), so no turn pays for a model load.
        results += asyncio.run(
            replay_files(paths, RouteContext(session_id=f"bench-{i}"), table, realtime=args.realtime)
        )
        wall += time.perf_counter() - t0
    audio_s = sum(r.audio_s for r in results)
    times = stage_times(results)
    turns = sum(len(r.session.turns) for r in results if r.session)
    errors = sum(len(r.session.errors) for r in results if r.session)

    print(f"{len(paths)} files x {args.repeat} runs, {turns} turns, {audio_s:.1f} s of audio replayed in {wall:.1f} s"
          f" ({'real time' if args.realtime else 'as fast as possible'}); {errors} errors")
    print(f"{'stage':<34}{'median':>10}{'max':>10}{'n':>5}")
    print(f"{'VAD + turn detection per audio s':<34}{detect_ms_per_audio_s(paths):>8.2f}ms{'':>10}{'':>5}")
    rows = (
        ("STT final (turn end -> text)", "stt_final"),
        ("agent (echo)", "agent"),
        ("TTS first audio (per reply)", "tts_first"),
        ("TTS total (start -> reply done)", "tts_total"),
        ("turn end -> first reply audio", "first_audio"),
    )
    for label, key in rows:
        values = times[key]
        if values:
            print(f"{label:<34}{statistics.median(values):>8.0f}ms{max(values):>8.0f}ms{len(values):>5}")
        else:
            print(f"{label:<34}{'-':>10}{'-':>10}{0:>5}")


if __name__ == "__main__":
    main()
