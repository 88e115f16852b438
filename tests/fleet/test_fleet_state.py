"""The fleet's shared state on a real redis-server: leases, admission, breakers, Redis lost and back."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis_helpers import RedisServer, requires_redis

from voicerouter import fleet, resilience
from voicerouter.config.loader import parse_routes
from voicerouter.config.schema import StateConfig
from voicerouter.errors import CapacityError
from voicerouter.fleet.redis_state import RedisState
from voicerouter.resilience import SessionAdmission
from voicerouter.resilience.state import provider_state
from voicerouter.routing.plan import RouteContext
from voicerouter.session.events import EventBus, EventType

pytestmark = requires_redis

TABLE = """\
version: 1
providers:
  dg:    {type: deepgram, kind: stt, api_key: "${K}", max_concurrent_sessions: 2}
  local: {type: pocketsphinx}
  tts:   {type: piper}
defaults:
  stt: [dg, local]
  tts: [tts]
routes:
  - name: acme
    match: {tenant: acme}
    stt: [dg]
    resilience: {max_concurrent_sessions: 3}
"""


@pytest.fixture(autouse=True)
def _clean():
    resilience.reset()
    yield
    fleet.install(None)
    resilience.reset()


async def node(server: RedisServer, name: str, **config: object) -> RedisState:
    state = RedisState(StateConfig(backend="redis", url=server.url, **config), server.url, node_id=name)
    await state.start()
    return state


async def raw(server: RedisServer):
    from redis.asyncio import Redis

    return Redis.from_url(server.url)


async def test_a_limit_holds_across_nodes_and_a_release_frees_the_slot(redis_server: RedisServer) -> None:
    a, b = await node(redis_server, "a"), await node(redis_server, "b")
    try:
        assert await a.acquire("s1", [("provider:x", 2)]) == 0
        assert await b.acquire("s2", [("provider:x", 2)]) == 0
        assert await b.acquire("s3", [("provider:x", 2)]) == 1  # the 1st scope is full
        assert await a.acquire("s1", [("provider:x", 2)]) == 0  # a holder asking again keeps its slot
        assert await a.count("provider:x") == 2
        await a.release("s1")
        assert await b.acquire("s3", [("provider:x", 2)]) == 0
        # All or nothing: a full second scope takes nothing from the first.
        assert await a.acquire("s4", [("route:r", 5), ("provider:x", 2)]) == 2
        assert await a.count("route:r") == 0
    finally:
        await a.aclose()
        await b.aclose()


async def test_admission_without_any_limit_takes_nothing(redis_server: RedisServer) -> None:
    shared = await node(redis_server, "a")
    try:
        assert await shared.admit("s1", [], [([], True), ([], True)]) == (0, [0, 0])
        assert await shared.admit("s2", [], [([("provider:x", 1)], False), ([], True)]) == (0, [1, 0])
        assert await shared.admit("s3", [], [([("provider:x", 1)], True)]) == (0, [0])  # full, but optional
        assert await shared.admit("s4", [("route:r", 1)], [([("provider:x", 1)], False)]) == (2, [1])
        assert await shared.count("route:r") == 0  # all or nothing
    finally:
        await shared.aclose()


async def test_a_holder_that_stops_renewing_is_reaped_after_its_lease(redis_server: RedisServer) -> None:
    crashed = await node(redis_server, "crashed", lease_s=0.4)
    crashed._loop_task.cancel()  # no more heartbeats: as if the process had died
    other = await node(redis_server, "other", lease_s=0.4)
    try:
        assert await crashed.acquire("s1", [("provider:x", 1)]) == 0
        assert await other.acquire("s2", [("provider:x", 1)]) == 1
        await asyncio.sleep(0.6)
        assert await other.acquire("s2", [("provider:x", 1)]) == 0
    finally:
        await crashed.aclose()
        await other.aclose()


async def test_a_live_session_keeps_its_slot_beyond_the_lease(redis_server: RedisServer) -> None:
    alive = await node(redis_server, "alive", lease_s=0.4)
    other = await node(redis_server, "other", lease_s=0.4)
    try:
        assert await alive.acquire("s1", [("provider:x", 1)]) == 0
        await asyncio.sleep(1.0)  # two and a half leases: the heartbeat renews it
        assert await other.acquire("s2", [("provider:x", 1)]) == 1
    finally:
        await alive.aclose()
        await other.aclose()


async def test_session_admission_uses_fleet_wide_limits(redis_server: RedisServer) -> None:
    table = parse_routes(TABLE)
    shared = await node(redis_server, "here")
    fleet.install(shared)
    elsewhere = await node(redis_server, "elsewhere")
    try:
        dg_key = provider_state("dg", table.config.providers["dg"]).key
        # Another process holds both of dg's slots.
        assert await elsewhere.acquire("x1", [(f"provider:{dg_key}", 2)]) == 0
        assert await elsewhere.acquire("x2", [(f"provider:{dg_key}", 2)]) == 0
        # The default route fails over to the local engine for its slot...
        plan = table.resolve(RouteContext(tenant="other", session_id="d1"))
        async with SessionAdmission(plan) as admission:
            assert admission.picked["stt"] is None  # local has no limit
        # ...the acme route has only dg: refused, with an event saying why.
        bus = EventBus("a1")
        plan = table.resolve(RouteContext(tenant="acme", session_id="a1"))
        with pytest.raises(CapacityError, match="fleet-wide"):
            async with SessionAdmission(plan, bus):
                pass
        assert [e.type for e in bus.history] == [EventType.REFUSED]
        await elsewhere.release("x1")
        async with SessionAdmission(plan) as admission:
            assert admission.picked["stt"] == "dg"
            assert await shared.count(f"provider:{dg_key}") == 2
            assert await shared.count("route:acme") == 1
        assert await shared.count(f"provider:{dg_key}") == 1
        assert await shared.count("route:acme") == 0
    finally:
        await shared.aclose()
        await elsewhere.aclose()


async def test_a_breaker_opened_in_another_process_opens_here(redis_server: RedisServer) -> None:
    table = parse_routes(TABLE)
    state = provider_state("dg", table.config.providers["dg"])
    shared = await node(redis_server, "here")
    client = await raw(redis_server)
    try:
        bus = EventBus("s1")
        state.buses.add(bus)
        await asyncio.wait_for(shared.subscribed.wait(), 5)
        message = {"kind": "breaker", "key": state.key, "state": "open", "node": "there",
                   "reason": "auth: invalid key", "cooldown_ms": 30000}
        await client.publish("voicerouter:events", json.dumps(message))
        for _ in range(100):
            if state.breaker.state == "open":
                break
            await asyncio.sleep(0.02)
        assert state.breaker.state == "open"
        assert not state.breaker.allow()
        breaker_events = [e for e in bus.history if e.type == EventType.BREAKER]
        assert breaker_events and breaker_events[0].data["source"] == "fleet"
        assert "there" in breaker_events[0].data["reason"]
        # Its success in the other process (the fleet's probe) closes it here too.
        await client.publish("voicerouter:events", json.dumps({**message, "state": "closed"}))
        for _ in range(100):
            if state.breaker.state == "closed":
                break
            await asyncio.sleep(0.02)
        assert state.breaker.state == "closed"
    finally:
        await shared.aclose()
        await client.aclose()


async def test_a_trip_here_is_published_and_one_probe_permit_exists_fleet_wide(redis_server: RedisServer) -> None:
    table = parse_routes(TABLE.replace("defaults:", "defaults:\n  resilience: {breaker: {cooldown_s: 0.3}}", 1))
    plan = table.resolve(RouteContext(tenant="x", session_id="s"))
    state = provider_state("dg", table.config.providers["dg"], plan.resilience.breaker)
    shared = await node(redis_server, "here")
    client = await raw(redis_server)
    try:
        state.breaker.trip("auth: 401")
        for _ in range(100):
            if await client.exists(f"voicerouter:breaker:{state.key}"):
                break
            await asyncio.sleep(0.02)
        stored = json.loads(await client.get(f"voicerouter:breaker:{state.key}"))
        assert stored["node"] == "here" and stored["state"] == "open"
        # Another node holds the probe permit: after the cooldown we do not probe.
        await client.set(f"voicerouter:probe:{state.key}", "there", px=5000)
        await asyncio.sleep(0.6)
        assert state.breaker.cooled()
        assert not state.breaker.allow()
        # The permit is released: ours to take, and exactly one caller here probes.
        await client.delete(f"voicerouter:probe:{state.key}")
        for _ in range(100):
            if shared._may_probe(state):
                break
            await asyncio.sleep(0.02)
        assert state.breaker.allow()
        assert state.breaker.state == "half_open"
        assert not state.breaker.allow()
    finally:
        await shared.aclose()
        await client.aclose()


async def test_redis_lost_means_local_shares_said_once_then_resync(tmp_path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    shared = await node(server, "here", timeout_ms=50)
    try:
        shared.nodes_seen = 2  # two processes in the fleet: each may admit half of a limit alone
        bus = EventBus("s")
        shared.watch(bus)
        assert await shared.acquire("s1", [("provider:x", 4)]) == 0
        server.stop()
        assert await shared.acquire("s2", [("provider:x", 4)]) == 0  # local share: 2 of 4
        assert await shared.acquire("s3", [("provider:x", 4)]) == 1
        assert shared.status()["mode"] == "local"
        warnings = [e for e in bus.history if e.type == EventType.WARNING and e.data.get("stage") == "state"]
        assert len(warnings) == 1 and warnings[0].data["reason"] == "state_local"
        await shared.release("s2")
        server.start()  # same port: the process reconnects by itself
        for _ in range(100):
            if shared.connected:
                break
            await asyncio.sleep(0.05)
        assert shared.status()["mode"] == "shared"
        client = await raw(server)
        try:
            # The live session's slot was written back, although Redis lost everything.
            assert await client.zscore("voicerouter:slots:provider:x", "here/s1") is not None
        finally:
            await client.aclose()
        kinds = [e.data.get("reason") for e in bus.history if e.type == EventType.WARNING]
        assert kinds == ["state_local", "state_shared"]
    finally:
        await shared.aclose()
        server.stop()


async def test_a_process_that_starts_late_sees_breakers_already_open(redis_server: RedisServer) -> None:
    table = parse_routes(TABLE)
    state = provider_state("dg", table.config.providers["dg"])
    client = await raw(redis_server)
    await client.set(f"voicerouter:breaker:{state.key}", json.dumps(
        {"kind": "breaker", "key": state.key, "state": "open", "node": "there", "reason": "auth: 401"}), px=30000)
    shared = await node(redis_server, "late")
    try:
        assert state.breaker.state == "open" and not state.breaker.allow()
    finally:
        await shared.aclose()
        await client.aclose()


async def test_an_unreachable_redis_at_start_still_admits(tmp_path) -> None:
    from redis_helpers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    shared = RedisState(StateConfig(backend="redis", url=url), url, node_id="lonely")
    await shared.start()
    try:
        assert shared.status()["connected"] is False
        assert await shared.acquire("s1", [("provider:x", 1)]) == 0
        assert await shared.acquire("s2", [("provider:x", 1)]) == 1
    finally:
        await shared.aclose()
