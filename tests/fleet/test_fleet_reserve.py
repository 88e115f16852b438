"""Phone calls are admitted fleet-wide at webhook time: two `serve` processes on one real
redis-server, `state.max_sessions: 1`. A webhook reserves the call's slots for `state.reserve_s`;
another process's webhook then answers busy; the media stream claims the reservation wherever it
lands; a reservation no stream claims expires."""

from __future__ import annotations

import asyncio
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
from redis_helpers import requires_redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from serve_helpers import KEY, SAMPLES, TOKEN, cloud_table, serve  # noqa: E402

from voicerouter.load import CallPlan, answer_stream, load_fixture  # noqa: E402
from voicerouter.testing import emulate  # noqa: E402
from voicerouter.transports import twilio  # noqa: E402

pytestmark = [requires_redis, pytest.mark.slow]


def table(dg_url: str, ca_url: str, redis_url: str, reserve_s: float) -> str:
    return cloud_table(dg_url, ca_url, f'state: {{backend: redis, url: "{redis_url}", max_sessions: 1, '
                                       f'reserve_s: {reserve_s}, timeout_ms: 2000}}\n')


async def webhook(http: aiohttp.ClientSession, base: str, call_sid: str) -> tuple[str, dict]:
    url = base + "/twilio/voice"
    form = twilio.call_params(call_sid, "+15550100123", "+15559990000")
    async with http.post(url, data=form, headers={twilio.SIGNATURE_HEADER: twilio.signature(TOKEN, url, form)}) as r:
        assert r.status == 200, await r.text()
        return twilio.parse_twiml(await r.text())


async def fleet_holders(redis_url: str) -> list[str]:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        seconds, micros = await client.time()
        now = seconds * 1000 + micros // 1000
        return [m.decode() for m in await client.zrangebyscore("voicerouter:slots:fleet", now, "+inf")]
    finally:
        await client.aclose()


async def nodes(stack: AsyncExitStack, tmp_path: Path, redis_url: str, reserve_s: float):
    dg = await stack.enter_async_context(emulate("deepgram", api_key=KEY, transcript="hello"))
    ca = await stack.enter_async_context(emulate("cartesia", api_key=KEY))
    servers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        servers.append(await stack.enter_async_context(serve(tmp_path / name, table(dg.url, ca.url, redis_url, reserve_s))))
    return servers


async def test_a_full_fleet_rejects_at_the_webhook_and_an_unclaimed_reservation_expires(tmp_path, redis_server):
    async with AsyncExitStack() as stack:
        a, b = await nodes(stack, tmp_path, redis_server.url, reserve_s=1.5)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        verb, _ = await webhook(http, a.url, "CA-first")
        reserved_at = time.monotonic()
        assert verb == "stream" and await fleet_holders(redis_server.url) == ["call/CA-first"]
        from voicerouter.fleet.status import fleet_status

        seen = await fleet_status(redis_server.url, "voicerouter:")
        assert seen["reserved_calls"] == 1 and seen["slots"] == {"fleet": 1}
        # Process b holds nothing itself, but the fleet's one session is reserved: busy, not answered.
        verb, info = await webhook(http, b.url, "CA-second")
        assert (verb, info) == ("reject", {"reason": "busy"})
        async with http.get(b.url + "/metrics") as r:
            assert 'reason="fleet_capacity"' in await r.text()
        # No stream comes for CA-first: its reservation lapses, and the fleet takes calls again.
        async with asyncio.timeout(10):
            while (await webhook(http, b.url, "CA-third"))[0] != "stream":
                await asyncio.sleep(0.1)
        assert time.monotonic() - reserved_at >= 1.4
        assert await fleet_holders(redis_server.url) == ["call/CA-third"]


async def test_the_stream_claims_the_reservation_on_another_process(tmp_path, redis_server):
    async with AsyncExitStack() as stack:
        a, b = await nodes(stack, tmp_path, redis_server.url, reserve_s=10)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        verb, info = await webhook(http, a.url, "CA-roaming")
        assert verb == "stream"
        # The load balancer sends the media stream to process b.
        stream_url = info["url"].replace(a.url.replace("http://", "ws://"), b.url.replace("http://", "ws://"))
        fixture = load_fixture(SAMPLES / "hello.wav")
        call = asyncio.create_task(answer_stream(http, "twilio", CallPlan(fixture.pcm + bytes(16000 * 2 * 2), listen_s=4),
                                                 stream_url, info["parameters"], "CA-roaming"))
        async with asyncio.timeout(20):
            while not (holders := await fleet_holders(redis_server.url)) or holders[0].startswith("call/"):
                await asyncio.sleep(0.05)
        assert len(holders) == 1 and holders[0].endswith("/CA-roaming")  # b's session, not the reservation
        verb, _ = await webhook(http, a.url, "CA-while-busy")
        assert verb == "reject"
        result = await call
        assert result.outcome == "answered" and result.heard, result.error
        async with asyncio.timeout(10):
            while await fleet_holders(redis_server.url):
                await asyncio.sleep(0.05)  # the session's slot is released when it ends
