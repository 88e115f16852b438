"""Three `serve` processes sharing one real redis-server: fleet-wide limits, breakers, crashes, Redis outages."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from redis_helpers import RedisServer, requires_redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from serve_helpers import KEY, SAMPLES, serve  # noqa: E402

from voicerouter.load import CallPlan, Target, load_fixture, run_load  # noqa: E402
from voicerouter.testing import emulate  # noqa: E402

pytestmark = [requires_redis, pytest.mark.slow]


def fleet_table(dg_url: str, tts_url: str, redis_url: str, *, limit: int = 5, lease_s: float = 15,
                bad_url: str | None = None, timeout_ms: int = 50) -> str:
    bad = f'  bad:  {{type: deepgram, kind: stt, model: nova-3, api_key: "${{DG_KEY}}", base_url: "{bad_url}"}}\n' \
        if bad_url else ""
    chain = "[bad, dg]" if bad_url else "[dg]"
    return f"""\
version: 1
providers:
  dg:   {{type: deepgram, kind: stt, model: nova-3, api_key: "${{DG_KEY}}", base_url: "{dg_url}", max_concurrent_sessions: {limit}}}
{bad}  cart: {{type: cartesia, voice: v-1, api_key: "${{CA_KEY}}", base_url: "{tts_url}"}}
defaults:
  stt: {chain}
  tts: [cart]
  resilience: {{retries: 0, first_result_timeout_ms: 3000, breaker: {{failures: 3, cooldown_s: 60}}}}
routes:
  - name: acme
    match: {{tenant: acme}}
state: {{backend: redis, url: "{redis_url}", lease_s: {lease_s}, timeout_ms: {timeout_ms}}}
"""


def node_dir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def long_call(seconds: float) -> CallPlan:
    """hello.wav, then silence: the caller stays on the line for `seconds`."""
    plan = load_fixture(SAMPLES / "hello.wav")
    pad = max(0, int(seconds * 16000) - len(plan.pcm) // 2)
    return CallPlan(plan.pcm + bytes(2 * pad), name="hello+silence", listen_s=0.5)


async def slots(redis_url: str, scope_prefix: str = "provider:dg#") -> int:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        seconds, micros = await client.time()
        now = seconds * 1000 + micros // 1000
        total = 0
        async for key in client.scan_iter(match=f"voicerouter:slots:{scope_prefix}*"):
            total += await client.zcount(key, now, "+inf")
        return total
    finally:
        await client.aclose()


async def status(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(url + "/status") as response:
        return await response.json()


async def test_a_provider_limit_of_5_admits_exactly_5_sessions_across_3_processes(tmp_path, redis_server):
    async with AsyncExitStack() as stack:
        dg = await stack.enter_async_context(emulate("deepgram", api_key=KEY, transcript="hello"))
        ca = await stack.enter_async_context(emulate("cartesia", api_key=KEY))
        # Three servers and thirty real-time calls on a two-core test machine: its event loops answer
        # late. A call that gets no answer within timeout_ms is decided on local state (its share,
        # tested below); here every decision must be Redis's, so the bound is generous.
        table = fleet_table(dg.url, ca.url, redis_server.url, limit=5, timeout_ms=2000)
        servers = [await stack.enter_async_context(serve(node_dir(tmp_path, f"node{i}"), table)) for i in range(3)]
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for server in servers:
            assert (await status(http, server.url))["state"]["mode"] == "shared"
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, await slots(redis_server.url))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        plan = long_call(12.0)
        reports = await asyncio.gather(*(
            run_load(Target(s.url, carrier="ws", tenant="acme"), [plan], calls=10, concurrency=10, transcribe=False)
            for s in servers
        ))
        watcher.cancel()
        answered = sum(r.count("answered") for r in reports)
        refused = sum(r.count("refused") for r in reports)
        assert sum(r.count("failed") for r in reports) == 0, [c.error for r in reports for c in r.calls]
        detail = [(await status(http, s.url))["state"] for s in servers]
        assert all(st["mode"] == "shared" and st["slow_calls"] == 0 for st in detail), detail
        assert peak == 5, detail
        assert (answered, refused) == (5, 25), detail
        assert await slots(redis_server.url) == 0  # every session gave its slot back


async def test_a_breaker_opened_by_a_401_in_one_process_is_skipped_by_the_others(tmp_path, redis_server):
    async with AsyncExitStack() as stack:
        dg = await stack.enter_async_context(emulate("deepgram", api_key=KEY, transcript="hello"))
        bad = await stack.enter_async_context(emulate("deepgram", api_key="another-key", transcript="hello"))
        ca = await stack.enter_async_context(emulate("cartesia", api_key=KEY))
        table = fleet_table(dg.url, ca.url, redis_server.url, bad_url=bad.url)
        servers = [await stack.enter_async_context(serve(node_dir(tmp_path, f"node{i}"), table)) for i in range(3)]
        plan = long_call(2.0)
        first = await run_load(Target(servers[0].url, carrier="ws", tenant="acme"), [plan], calls=1, concurrency=1,
                               transcribe=False)
        assert first.count("answered") == 1, "".join(servers[0].stderr)[-3000:]
        tried = len(bad.state.requests)
        assert tried >= 1  # the 401 that opened the breaker
        from redis.asyncio import Redis

        client = Redis.from_url(redis_server.url)
        try:
            opened = [k async for k in client.scan_iter(match="voicerouter:breaker:bad#*")]
            assert len(opened) == 1 and "auth" in json.loads(await client.get(opened[0]))["reason"]
        finally:
            await client.aclose()
        for server in servers[1:]:
            report = await run_load(Target(server.url, carrier="ws", tenant="acme"), [plan], calls=1, concurrency=1,
                                    transcribe=False)
            assert report.count("answered") == 1
        assert len(bad.state.requests) == tried  # the others never called it
        logs = [json.loads(line) for s in servers[1:] for f in s.out.glob("*.events.jsonl")
                for line in f.read_text().splitlines()]
        finals = [e for e in logs if e["type"] == "final_transcript"]
        assert finals and all(e["provider"] == "dg" for e in finals)


async def test_a_killed_process_frees_its_slots_within_the_lease(tmp_path, redis_server):
    lease = 2.0
    async with AsyncExitStack() as stack:
        dg = await stack.enter_async_context(emulate("deepgram", api_key=KEY, transcript="hello"))
        ca = await stack.enter_async_context(emulate("cartesia", api_key=KEY))
        table = fleet_table(dg.url, ca.url, redis_server.url, limit=2, lease_s=lease)
        doomed = await stack.enter_async_context(serve(node_dir(tmp_path, "doomed"), table))
        survivor = await stack.enter_async_context(serve(node_dir(tmp_path, "survivor"), table))
        calls = asyncio.create_task(run_load(Target(doomed.url, carrier="ws", tenant="acme"), [long_call(30.0)],
                                             calls=2, concurrency=2, transcribe=False))
        for _ in range(200):
            if await slots(redis_server.url) == 2:
                break
            await asyncio.sleep(0.05)
        assert await slots(redis_server.url) == 2
        # The fleet is full: the survivor refuses.
        refused = await run_load(Target(survivor.url, carrier="ws", tenant="acme"), [long_call(1.0)], calls=1,
                                 concurrency=1, transcribe=False)
        assert refused.count("refused") == 1
        doomed.signal(signal.SIGKILL)
        await doomed.wait()
        killed_at = asyncio.get_running_loop().time()
        while await slots(redis_server.url) > 0:
            assert asyncio.get_running_loop().time() - killed_at < lease + 1.0, "slots outlived the lease"
            await asyncio.sleep(0.05)
        calls.cancel()
        report = await run_load(Target(survivor.url, carrier="ws", tenant="acme"), [long_call(1.0)], calls=2,
                                concurrency=2, transcribe=False)
        assert report.count("answered") == 2


async def test_redis_stopped_mid_load_calls_go_on_within_the_bound_and_state_converges(tmp_path):
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        async with AsyncExitStack() as stack:
            dg = await stack.enter_async_context(emulate("deepgram", api_key=KEY, transcript="hello"))
            ca = await stack.enter_async_context(emulate("cartesia", api_key=KEY))
            table = fleet_table(dg.url, ca.url, redis.url, limit=4)
            servers = [await stack.enter_async_context(serve(node_dir(tmp_path, f"node{i}"), table)) for i in range(2)]
            http = await stack.enter_async_context(aiohttp.ClientSession())
            for _ in range(100):  # each has seen the other in the registry (its share is then 4 / 2)
                if [(await status(http, s.url))["state"]["nodes_seen"] for s in servers] == [2, 2]:
                    break
                await asyncio.sleep(0.1)
            first = [asyncio.create_task(run_load(Target(s.url, carrier="ws", tenant="acme"), [long_call(20.0)],
                                                  calls=1, concurrency=1, transcribe=False)) for s in servers]
            for _ in range(200):
                if await slots(redis.url) == 2:
                    break
                await asyncio.sleep(0.05)
            redis.stop()
            # Redis is away: calls are still answered, each process within its share (2 of 4) ...
            during = await asyncio.gather(*(
                run_load(Target(s.url, carrier="ws", tenant="acme"), [long_call(3.0)], calls=3, concurrency=3,
                         transcribe=False) for s in servers))
            assert sum(r.count("failed") for r in during) == 0
            assert [r.count("answered") for r in during] == [1, 1]  # one live call each + one more = the share
            states = [(await status(http, s.url))["state"] for s in servers]
            assert all(st["mode"] == "local" for st in states)
            async with http.get(servers[0].url + "/readyz") as response:
                assert response.status == 200 and "unreachable" in (await response.json())["reason"]
            redis.start()  # an empty Redis on the same port: the processes write their live sessions back
            for _ in range(100):
                if [(await status(http, s.url))["state"]["mode"] for s in servers] == ["shared", "shared"]:
                    break
                await asyncio.sleep(0.1)
            assert await slots(redis.url) == 2  # the two calls still going, counted again fleet-wide
            for task in first:
                task.cancel()
            await asyncio.gather(*first, return_exceptions=True)
    finally:
        redis.stop()


def test_long_call_fixture_is_mostly_silence() -> None:
    plan = long_call(5.0)
    pcm = np.frombuffer(plan.pcm, dtype="<i2")
    assert len(pcm) == 5 * 16000 and np.abs(pcm[-16000:]).max() == 0
