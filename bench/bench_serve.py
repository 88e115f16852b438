"""How many concurrent real-time phone calls one `serve` process holds on one core.

`voicerouter serve` runs on the emulated cloud route (Deepgram STT emulator with a fixed
transcript, Cartesia TTS emulator with canned tone audio, so the providers cost little; the Cartesia
provider set up as the README recommends for phone routes, at 8 kHz over its WebSocket, unless
`--tts-fields ''` asks for its plain HTTP at 16 kHz);
`voicerouter load --carrier twilio` processes place C calls, each speaking a sample in real time as
mu-law 20 ms frames and listening to the reply (playing it out, echoing marks). The calls of a step
start spread over `--ramp` seconds (default 2 s, shorter than a call: every call of the step is live
at once for most of it, `peak_live` shows it), because calls that start in the same millisecond all
end their turns in the same 20 ms, a herd no real phone traffic makes. `--ramp 0` measures that herd.
A short unreported warm-up step runs first (the first call's imports and connection pools).

Per step:
- first_audio_p50/p99_ms: turn end -> first reply audio, from the server's own event logs
  (`tts_first_audio`), i.e. what the server adds; the goal is p99 < 1000 ms.
- frames_over_40ms: caller frames that waited more than 40 ms between the server decoding them and
  the session taking them (the server's `voicerouter_frame_lag_seconds` histogram): the server's
  own lateness; the goal is 0. load_send_lag_max_ms is the load side's worst lateness in sending a
  frame (its own clock; a busy CPU 1 shows here, not in the server's figure).
- peak_live: the most calls the server held at once (its /status, polled every 0.25 s).
- server_cpu_ms_per_call, server_on_cpu_s / server_wall_s: the server's CPU time;
  server_waiting_for_cpu_s: time its threads were runnable but another process had the CPU (a
  busy machine: with --pin, CPU 0 should be the server's alone, and this should be ~0).
- emulators_on_cpu_s, loaders_on_cpu_s: the load side's CPU time (with --pin all on CPU 1).
- rss_per_call_kib: the server's peak resident memory over idle, per call.

C grows through the steps (stopping once more than a tenth of the calls fail); the largest C with
p99 < 1 s, no frame over 40 ms and no failed call is the number of calls held within the limits.
On a shared machine the wall-clock figures depend on what else runs; the server's CPU time per
call does not much, and (CPU per call) / (the call's length on an idle machine) is the share of a
core one live call needs: 1 / that share, taken at the largest step within the limits (else the
first step), is the calls one core could hold at 100 % ("calls per core by CPU"). `--pin` pins serve
to CPU 0 and the load generators and emulators to CPU 1, for an otherwise idle machine; the report
prints the load average before and after, so a busy machine is visible.

Run: python bench/bench_serve.py [--steps 25,50,75,100,125,150] [--loaders 2] [--ramp 2] [--pin] [--json]
     [--serve-arg=ARG ...]  (options for serve, to compare two settings in runs taken in turn)
     [--tts-fields YAML]    (the Cartesia provider's extra fields; '' for plain HTTP)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "hello.wav"
KEY = "bench-key"

TABLE = """\
version: 1
providers:
  dg:   {{type: deepgram, kind: stt, model: nova-3, api_key: "${{BENCH_KEY}}", base_url: "{dg}"}}
  cart: {{type: cartesia, voice: v-1, api_key: "${{BENCH_KEY}}", base_url: "{ca}"{tts_fields}}}
defaults:
  stt: [dg]
  tts: [cart]
  vad: {{frame_ms: 20}}
  resilience: {{retries: 0, first_result_timeout_ms: 3000}}
"""


PIN = False

# What the README recommends for phone routes: the TTS at the wire's 8 kHz over a WebSocket kept open.
PHONE_TTS = "sample_rate: 8000, options: {transport: websocket}"


def fixture_seconds() -> float:
    import soundfile

    info = soundfile.info(str(SAMPLE))
    return info.frames / info.samplerate


FIXTURE_S = fixture_seconds()


def pinned(cpu: int) -> list[str]:
    ok = PIN and shutil.which("taskset") and (os.cpu_count() or 1) > 1
    return ["taskset", "-c", str(cpu)] if ok else []


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_queue_s(pid: int) -> float:
    """Seconds the process's threads were runnable but waiting for a CPU (/proc schedstat): time
    the machine, not the server, kept calls waiting."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def live_calls(url: str) -> int:
    try:
        return int(json.loads(get(url + "/status"))["sessions"]["active"])
    except (OSError, ValueError, KeyError):
        return 0


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def frame_lag(metrics_text: str) -> tuple[float, float]:
    """(frames seen, frames that waited more than 40 ms)."""
    total = under = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "voicerouter_frame_lag_seconds":
            for s in family.samples:
                if s.name.endswith("_count"):
                    total = s.value
                if s.name.endswith("_bucket") and s.labels.get("le") == "0.04":
                    under = s.value
    return total, total - under


def first_audio_ms(out: Path, since: float) -> list[float]:
    values = []
    for log in out.glob("*.events.jsonl"):
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event["type"] == "tts_first_audio" and event["wall"] >= since:
                values.append(float(event["latency_ms"]))
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="25,50,75,100,125,150")
    parser.add_argument("--loaders", type=int, default=2, help="load processes sharing the calls of a step")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which a step's calls start (0: all at once)")
    parser.add_argument("--pin", action="store_true", help="pin serve to CPU 0 and the rest to CPU 1 (an idle machine)")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="pass ARG to serve (repeatable), e.g. --serve-arg=--max-sessions --serve-arg=80")
    parser.add_argument("--tts-fields", default=PHONE_TTS, metavar="YAML",
                        help=f"more fields of the Cartesia provider (default: the phone-route setting '{PHONE_TTS}'; "
                             "'' for Cartesia's plain HTTP at 16 kHz)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    global PIN
    PIN = args.pin
    env = {**os.environ, "BENCH_KEY": KEY, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    procs: list[subprocess.Popen] = []
    rows = []
    load_before = load_average()
    try:
        emu = subprocess.Popen([*pinned(1), sys.executable, "-m", "voicerouter", "emulate", "deepgram", "cartesia",
                                "--api-key", KEY, "--transcript", "i would like to pay my bill today"],
                               stdout=subprocess.PIPE, text=True, env=env)
        procs.append(emu)
        urls = {}
        while len(urls) < 2:
            line = emu.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise RuntimeError("the emulators did not start")
            if m := re.match(r"(deepgram|cartesia)\s+(http://\S+)", line):
                urls[m.group(1)] = m.group(2)
        (tmp / "routes.yaml").write_text(TABLE.format(dg=urls["deepgram"], ca=urls["cartesia"],
                                                           tts_fields=", " + args.tts_fields if args.tts_fields else ""))
        out = tmp / "out"
        server = subprocess.Popen([*pinned(0), sys.executable, "-m", "voicerouter", "serve", "--routes",
                                   str(tmp / "routes.yaml"), "--port", "0", "--out", str(out), "--allow-unsigned", *args.serve_arg],
                                  stderr=subprocess.PIPE, text=True, env={**env, "TWILIO_AUTH_TOKEN": ""})
        procs.append(server)
        url = None
        while url is None:
            line = server.stderr.readline()  # type: ignore[union-attr]
            if not line:
                raise RuntimeError("serve did not start")
            if m := re.search(r"listening on (http://\S+)", line):
                url = m.group(1)
        def place(calls: int, ramp: float) -> list[subprocess.Popen]:
            per = [calls // args.loaders + (1 if i < calls % args.loaders else 0) for i in range(args.loaders)]
            return [
                subprocess.Popen([*pinned(1), sys.executable, "-m", "voicerouter", "load", url, str(SAMPLE), "--calls",
                                  str(n), "--concurrency", str(n), "--no-transcribe", "--json",
                                  *(["--rate", f"{n / ramp:.3f}"] if ramp > 0 else [])],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
                for n in per if n
            ]

        for warm in place(2, 0):  # warm-up, not reported: the first call's imports and connection pools
            warm.communicate()
        idle_rss = rss_kib(server.pid)
        load_before = load_average()
        if not args.json:
            print(f"load average before: {load_before}  (pinned: {'yes' if pinned(0) else 'no'}; "
                  f"ramp {args.ramp:g} s; {args.loaders} load processes)", flush=True)
        for calls in [int(s) for s in args.steps.split(",")]:
            before_lag = frame_lag(get(url + "/metrics"))
            since = time.time()
            cpu_before = cpu_s(server.pid)
            emu_before = cpu_s(emu.pid)
            waited_before = run_queue_s(server.pid)
            wall_before = time.monotonic()
            loaders = place(calls, args.ramp)
            peak_rss = idle_rss
            peak_live = 0
            loader_cpu = {p.pid: 0.0 for p in loaders}
            while any(p.poll() is None for p in loaders):
                peak_rss = max(peak_rss, rss_kib(server.pid))
                peak_live = max(peak_live, live_calls(url))
                for p in loaders:
                    if p.poll() is None:
                        try:
                            loader_cpu[p.pid] = cpu_s(p.pid)
                        except OSError:
                            pass
                time.sleep(0.25)
            emu_used = cpu_s(emu.pid) - emu_before
            reports = [json.loads(p.stdout.read() or "{}") for p in loaders]  # type: ignore[union-attr]
            answered = sum(r.get("answered", 0) for r in reports)
            failed = sum(r.get("failed", 0) for r in reports) + sum(1 for r in reports if not r)
            send_lag = max((r.get("max_send_lag_ms", 0.0) for r in reports), default=0.0)
            cpu_used = cpu_s(server.pid) - cpu_before
            waited = run_queue_s(server.pid) - waited_before
            wall = time.monotonic() - wall_before
            results = [c for r in reports for c in r.get("results", []) if c.get("outcome") == "answered"]
            reasons: dict[str, int] = {}  # why calls failed, by the first words of their error
            for c in (c for r in reports for c in r.get("results", []) if c.get("outcome") == "failed"):
                why = " ".join(str(c.get("error") or "?").split()[:4])
                reasons[why] = reasons.get(why, 0) + 1
            # The call's length on an idle machine: the caller's speech, the reply, and ~1.8 s of turn
            # wait and hang-up. Under load calls stretch, so their wall duration would flatter the figure.
            reply_s = float(np.mean([c["reply_s"] for c in results])) if results else 0.0
            call_seconds = len(results) * (FIXTURE_S + reply_s + 1.8)
            after_lag = frame_lag(get(url + "/metrics"))
            late = after_lag[1] - before_lag[1]
            latencies = first_audio_ms(out, since)
            p50, p99 = (round(float(np.percentile(latencies, q))) for q in (50, 99)) if latencies else (None, None)
            row = {"calls": calls, "peak_live": peak_live, "answered": answered, "failed": failed, "first_audio_p50_ms": p50,
                   "first_audio_p99_ms": p99, "frames": int(after_lag[0] - before_lag[0]),
                   "frames_over_40ms": int(late), "load_send_lag_max_ms": send_lag,
                   "rss_per_call_kib": round((peak_rss - idle_rss) / max(1, calls)),
                   "server_cpu_ms_per_call": round(cpu_used * 1000 / max(1, len(results))),
                   "server_wall_s": round(wall, 1), "server_on_cpu_s": round(cpu_used, 1),
                   "server_waiting_for_cpu_s": round(waited, 1),
                   "emulators_on_cpu_s": round(emu_used, 1), "loaders_on_cpu_s": round(sum(loader_cpu.values()), 1),
                   "nominal_call_s": round(FIXTURE_S + reply_s + 1.8, 1),
                   # CPU one live call costs the server, as a share of a core: 1 / this = calls per core
                   "cpu_share_per_call": round(cpu_used / call_seconds, 4) if call_seconds else None}
            if reasons:
                row["failures"] = "; ".join(f"{n}x {why}" for why, n in sorted(reasons.items(), key=lambda i: -i[1]))
            rows.append(row)
            if not args.json:
                print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            if failed > calls // 10 or not latencies:
                break  # past saturation: the next step says nothing more
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    passed = [r for r in rows if not r["failed"] and r["first_audio_p99_ms"] is not None
              and r["first_audio_p99_ms"] < 1000 and r["frames_over_40ms"] == 0]
    # The CPU share of a call where the server was within its limits (not a saturated step, where
    # batching flatters it); the first step when none was.
    basis = passed[-1] if passed else (rows[0] if rows else None)
    share = basis["cpu_share_per_call"] if basis else None
    summary = {"steps": rows, "calls_held_within_limits": passed[-1]["calls"] if passed else 0,
               "calls_per_core_by_cpu": round(1 / share) if share else None,
               "load_average_before": load_before if rows else None, "load_average_after": load_average()}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"load average after: {summary['load_average_after']}")
        print(f"largest step within p99 < 1 s, no frame lag > 40 ms and no failed call: "
              f"{summary['calls_held_within_limits']} calls; server CPU per live call at "
              f"{basis['calls'] if basis else '-'} calls -> {summary['calls_per_core_by_cpu']} calls per core by CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
