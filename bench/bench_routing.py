"""Routing speed: resolve() on a 1,000-route table, and whole-process start-up of resolve/validate.

Run: python bench/bench_routing.py   (prints microseconds per resolve and process wall times)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from voicerouter import RouteContext, parse_routes


def big_table(n_routes: int = 1000) -> str:
    providers = {
        "local-stt": {"type": "pocketsphinx"},
        "local-tts": {"type": "piper"},
        "dg": {"type": "deepgram", "kind": "stt", "api_key": "${DEEPGRAM_API_KEY}"},
        "el": {"type": "elevenlabs", "kind": "tts", "api_key": "${ELEVENLABS_API_KEY}"},
    }
    routes = []
    for i in range(n_routes):
        route = {"name": f"r{i}", "match": {"tenant": f"tenant-{i}", "region": ["eu-*", f"us-{i % 7}-*"]}}
        if i % 3 == 0:
            route["tts"] = {"split": {"el": 60, "local-tts": 40}}
        if i % 5 == 0:
            route["stt"] = ["dg", "local-stt"]
        routes.append(route)
    return yaml.safe_dump(
        {"version": 1, "providers": providers, "defaults": {"stt": ["local-stt"], "tts": ["local-tts"]}, "routes": routes}
    )


def bench_resolve(text: str) -> None:
    started = time.perf_counter()
    table = parse_routes(text, env={"DEEPGRAM_API_KEY": "x", "ELEVENLABS_API_KEY": "x"})
    print(f"load+check 1000-route table: {(time.perf_counter() - started) * 1000:.0f} ms")
    for label, tenant in (("first route", "tenant-0"), ("middle route", "tenant-500"), ("last route", "tenant-999"), ("no match", "nobody")):
        ctx = RouteContext(tenant=tenant, region="eu-west-1", session_id="bench")
        n = 300
        start = time.perf_counter()
        for _ in range(n):
            table.resolve(ctx)
        per = (time.perf_counter() - start) / n * 1e6
        print(f"resolve ({label:>12}): {per:8.1f} us")


def wall(cmd: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def bench_processes(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "routes.yaml"
        path.write_text(text)
        example = Path(__file__).resolve().parent.parent / "routes.example.yaml"
        py = sys.executable
        rows = [
            ("python -c pass", [py, "-c", "pass"]),
            ("voicerouter --help", [py, "-m", "voicerouter", "--help"]),
            ("voicerouter resolve (example)", [py, "-m", "voicerouter", "resolve", "--routes", str(example), "--tenant", "acme", "--json"]),
            ("voicerouter validate (example)", [py, "-m", "voicerouter", "validate", str(example)]),
            ("voicerouter validate (1000 routes)", [py, "-m", "voicerouter", "validate", str(path)]),
        ]
        for label, cmd in rows:
            print(f"{label:<36} {wall(cmd):7.0f} ms (median of 5)")


if __name__ == "__main__":
    text = big_table()
    bench_resolve(text)
    bench_processes(text)
