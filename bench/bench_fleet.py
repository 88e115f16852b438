"""Fleet admission: the cost of a session's admission (acquire + release of its slots) in memory and on a
loopback Redis, and how many admissions per second a fleet of 3 processes sharing one Redis makes.

Starts its own redis-server on a free loopback port (needs the `redis-server` binary).
Run: python bench/bench_fleet.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from voicerouter import fleet, resilience
from voicerouter.config.loader import parse_routes
from voicerouter.config.schema import StateConfig
from voicerouter.resilience import SessionAdmission
from voicerouter.routing.plan import RouteContext

TABLE = """\
version: 1
providers:
  dg:   {type: deepgram, kind: stt, api_key: "${K}", max_concurrent_sessions: 100000}
  tts:  {type: cartesia, voice: v, api_key: "${K}", max_concurrent_sessions: 100000}
defaults:
  stt: [dg]
  tts: [tts]
  resilience: {max_concurrent_sessions: 100000}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def admission_times(n: int, url: str | None) -> list[float]:
    """Seconds per admission (enter + exit of SessionAdmission: route + stt + tts slots)."""
    table = parse_routes(TABLE)
    resilience.reset()
    shared = None
    if url is not None:
        from voicerouter.fleet.redis_state import RedisState

        shared = RedisState(StateConfig(backend="redis", url=url, max_sessions=100000), url)
        await shared.start()
        fleet.install(shared)
    plans = [table.resolve(RouteContext(tenant="t", session_id=f"s{i}")) for i in range(n)]
    times = []
    try:
        for plan in plans:
            started = time.perf_counter()
            async with SessionAdmission(plan):
                pass
            times.append(time.perf_counter() - started)
    finally:
        fleet.install(None)
        if shared is not None:
            await shared.aclose()
    return times


async def ping_times(n: int, url: str) -> list[float]:
    """A bare PING round trip with the same client: what one Redis round trip costs on this machine now."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    times = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            await client.ping()
            times.append(time.perf_counter() - started)
    finally:
        await client.aclose()
    return times


def fleet_worker(url: str, seconds: float, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def run() -> int:
        table = parse_routes(TABLE)
        from voicerouter.fleet.redis_state import RedisState

        shared = RedisState(StateConfig(backend="redis", url=url, max_sessions=100000), url)
        await shared.start()
        fleet.install(shared)
        done = 0
        deadline = time.perf_counter() + seconds
        try:
            while time.perf_counter() < deadline:
                plan = table.resolve(RouteContext(tenant="t", session_id=f"w{done}"))
                async with SessionAdmission(plan):
                    done += 1
        finally:
            await shared.aclose()
        return done

    queue.put(asyncio.run(run()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            url = f"redis://127.0.0.1:{port}/0"
            memory = asyncio.run(admission_times(args.n, None))
            redis = asyncio.run(admission_times(args.n, url))
            pings = asyncio.run(ping_times(args.n, url))
            for name, times in (("in-memory", memory), ("redis (loopback)", redis), ("bare PING", pings)):
                print(f"admission {name:17s}: p50 {statistics.median(times) * 1e6:8.1f} us, "
                      f"p99 {percentile(times, 0.99) * 1e6:8.1f} us  ({len(times)} sessions: fleet + route + 2 providers)")
            print(f"redis admission p50 = {statistics.median(redis) / statistics.median(pings):.1f} PING round trips "
                  "(one script to admit, one to release)")
            queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
            workers = [multiprocessing.Process(target=fleet_worker, args=(url, args.seconds, queue)) for _ in range(3)]
            for worker in workers:
                worker.start()
            counts = [queue.get(timeout=args.seconds + 60) for _ in workers]
            for worker in workers:
                worker.join()
            print(f"fleet of 3 processes: {sum(counts) / args.seconds:,.0f} admissions/s "
                  f"({', '.join(f'{c / args.seconds:,.0f}' for c in counts)} per process) over {args.seconds:g} s")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
