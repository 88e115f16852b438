"""Routing speed: resolve() on a 1,000-route table, and whole-process start-up of resolve/validate,
including 10,000-route tables (literal tenants, tenant globs, flag-only routes: the shapes where a
pairwise shadowed-route check was quadratic).

Run: python bench/bench_routing.py   (prints microseconds per resolve, process wall and CPU times, and
the start-up of resolve/validate as a ratio to `python -c pass`, uncached and cached)
"""

from __future__ import annotations

import os
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


# `validate` and `resolve` answer repeated questions from a cache (cli/cached.py); the table-size
# figures measure the real check, so they run without it.
# Child processes get byte code as an installed package has it (a first run writes it), whatever
# this shell says about writing it.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
NO_CACHE = {**ENV, "VOICEROUTER_NO_CACHE": "1"}


def wall(cmd: list[str], runs: int = 5) -> float:
    return timed(cmd, runs)[0]


def timed(cmd: list[str], runs: int = 5, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Median wall and CPU (user+system of the child) milliseconds of a whole process."""
    walls, cpus = [], []
    for _ in range(runs):
        before = os.times()
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False, env=NO_CACHE if env is None else env)
        walls.append(time.perf_counter() - start)
        after = os.times()
        cpus.append((after.children_user - before.children_user) + (after.children_system - before.children_system))
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000


def shaped_table(shape: str, n_routes: int = 10_000) -> str:
    """10,000 routes of one shape: distinct tenant globs, or flag-only matches (no tenant at all)."""
    routes = []
    for i in range(n_routes):
        match = {"tenant": f"t{i}-*"} if shape == "globs" else {"flags": {f"f{i}": True}}
        routes.append({"name": f"r{i}", "match": match})
    return yaml.safe_dump(
        {"version": 1, "providers": {"s": {"type": "pocketsphinx"}, "t": {"type": "piper"}},
         "defaults": {"stt": ["s"], "tts": ["t"]}, "routes": routes}
    )


def bench_big_tables() -> None:
    """Whole-process `validate` and `resolve` of the 10,000-route tables: wall and CPU time (median
    of 5), and CPU time as a ratio to `python -c pass`. Uncached: the table is read and checked;
    cached: the answer kept by the previous run (cli/cached.py)."""
    py = sys.executable
    env = ENV
    bare_wall, bare_cpu = timed([py, "-c", "pass"], runs=9, env=env)
    print(f"python -c pass: {bare_wall:.0f} ms wall, {bare_cpu:.0f} ms CPU")
    with tempfile.TemporaryDirectory() as tmp:
        for label, text in (("literal tenants", big_table(10_000)), ("tenant globs", shaped_table("globs")),
                            ("flags only", shaped_table("flags"))):
            path = Path(tmp) / "routes.yaml"
            path.write_text(text)
            size = len(text.encode()) // 1024
            for command, cmd in (
                ("validate", [py, "-m", "voicerouter", "validate", str(path)]),
                ("resolve", [py, "-m", "voicerouter", "resolve", "--routes", str(path), "--tenant", "t5000-x"]),
            ):
                for mode, extra in (("uncached", {"VOICEROUTER_NO_CACHE": "1"}), ("cached", {"VOICEROUTER_CACHE_DIR": tmp})):
                    wall_ms, cpu_ms = timed(cmd, runs=5, env={**env, **extra})
                    print(f"10,000 routes, {label:<15} ({size:>4} KB) {command:<8} {mode:<8} "
                          f"{wall_ms:7.0f} ms wall {cpu_ms:7.0f} ms CPU ({cpu_ms / bare_cpu:5.1f}x python -c pass)")


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


def bench_startup(runs: int = 9) -> None:
    """Start-up of `resolve` and `validate` on the example table as a ratio to a bare `python -c pass`,
    measured in one run (CPU time of the child, median): the first call (no cache) and the next ones."""
    example = Path(__file__).resolve().parent.parent / "routes.example.yaml"
    py = sys.executable
    with tempfile.TemporaryDirectory() as cache:
        cached = {**ENV, "VOICEROUTER_CACHE_DIR": cache}
        _, bare = timed([py, "-c", "pass"], runs, env=cached)
        for label, args in (
            ("resolve", ["resolve", "--routes", str(example), "--tenant", "acme", "--json"]),
            ("validate", ["validate", str(example)]),
        ):
            cmd = [py, "-m", "voicerouter", *args]
            _, cold = timed(cmd, runs, env=NO_CACHE)
            subprocess.run(cmd, capture_output=True, check=False, env=cached)  # fills the cache
            _, warm = timed(cmd, runs, env=cached)
            print(f"start-up {label:<8} {cold:6.0f} ms CPU uncached ({cold / bare:4.1f}x python -c pass), "
                  f"{warm:5.0f} ms cached ({warm / bare:4.1f}x); python -c pass {bare:.0f} ms")


if __name__ == "__main__":
    subprocess.run([sys.executable, "-m", "voicerouter", "--help"], capture_output=True, check=False, env=ENV)
    text = big_table()
    bench_resolve(text)
    bench_startup()
    bench_processes(text)
    bench_big_tables()
