"""A fleet's shared state on Redis: session slots as leases, breakers, health and latency.

Keys (all under the table's `state.prefix`, default `voicerouter:`):

    slots:<scope>        sorted set of slot holders (`<node>/<session>`) scored by lease expiry (ms, Redis time);
                         scopes: `fleet`, `route:<name>`, `provider:<instance key>`
    breaker:<instance>   an open breaker: JSON {reason, node}; lives for the cooldown (PX)
    probe:<instance>     the fleet's one half-open probe permit: the node holding it (PX)
    health:<instance>    hash node -> JSON {healthy, error, latency_s, t}, refreshed every second
    node:<id>            hash describing a live process (sessions, draining, url); lives for one lease
    call:<call id>       a call a webhook answered and reserved slots for: the node; lives for `state.reserve_s`
    nodes                set of node ids (pruned when their node:<id> key is gone)
    events               pub/sub channel: breaker trips and closes

Acquire, renew and release are Lua scripts on Redis time, so a decision over several limits is
atomic and no process clock matters. A phone call's slots are reserved when its webhook answers,
under the holder `call/<call id>` (no node: the media stream may reach another process), with the
short lease `state.reserve_s` and no renewal; the session's admission claims them in the same
script that admits it (the reservation leaves every scope as the session enters), and a
reservation no stream claims expires. A crashed process stops renewing: its slots are reaped
once their lease expires (`state.lease_s`).

Redis down or slow: no call waits on Redis for more than `state.timeout_ms`; a call that gets no
answer by then is decided on local state: admitted while this process holds less than its share
ceil(limit / live nodes last seen) of each limit. A refused or broken connection (or the
background loop getting no answer within a second) switches the whole process to local state: it
says so once (a `warning` event in live sessions, `/status` and `/readyz`), never refuses a call
only because Redis is away, and resynchronises when Redis answers again (its live sessions' slots
are renewed even over a limit: they exist; its open breakers are republished). So a limit is
exceeded by at most the shares of the processes deciding alone: limit + k * ceil(limit / n) for
k of n processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import socket
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from voicerouter.config.secrets import redact
from voicerouter.resilience import state as local_state
from voicerouter.resilience.state import ProviderState
from voicerouter.session.events import EventType

if TYPE_CHECKING:
    from voicerouter.config.schema import StateConfig
    from voicerouter.session.events import EventBus

log = logging.getLogger("voicerouter.fleet")
T = TypeVar("T")

TICK_S = 0.1  # the background loop's pace (probe permits, reconnection)
SHARE_S = 1.0  # how often health and latency are published and merged
FRESH_S = 5.0  # another node's health/latency older than this is ignored
PROBE_S = 5.0  # a probe permit not used within this long passes to another node
BACKGROUND_TIMEOUT_S = 1.0  # Redis operations off a call's path (renewals, registry, breakers, reconnection)

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if not redis.call('ZSCORE', key, ARGV[1]) and redis.call('ZCARD', key) >= tonumber(ARGV[i + 2]) then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[1])
  redis.call('PEXPIRE', key, lease * 2)
end
return 0
"""

# A session's whole admission in one round trip. ARGV: holder, lease, number of fixed scopes,
# number of stage groups, then (size, optional) per group, then a limit per key, then the holder
# of a reservation this admission claims (or ""). KEYS: the fixed
# scopes (all needed), then each group's candidates in order (the first with room is taken; an
# optional group may take none). Returns {0, pick per group (0: none)} or {1, fixed index} or {2, group}.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder, lease = ARGV[1], tonumber(ARGV[2])
local nfixed, ngroups = tonumber(ARGV[3]), tonumber(ARGV[4])
local limits = 4 + 2 * ngroups
local claim = ARGV[limits + #KEYS + 1]
if claim and claim ~= '' then  -- a reservation made for this session becomes its slots
  for _, key in ipairs(KEYS) do redis.call('ZREM', key, claim) end
end
local function room(i)
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  return redis.call('ZSCORE', KEYS[i], holder) or redis.call('ZCARD', KEYS[i]) < tonumber(ARGV[limits + i])
end
local take = {}
for i = 1, nfixed do
  if not room(i) then return {1, i} end
  take[#take + 1] = i
end
local picks = {0}
local base = nfixed
for g = 1, ngroups do
  local size, optional = tonumber(ARGV[3 + 2 * g]), tonumber(ARGV[4 + 2 * g])
  local picked = 0
  for j = 1, size do
    if picked == 0 and room(base + j) then picked = j end
  end
  if picked == 0 and optional == 0 then return {2, g} end
  if picked > 0 then take[#take + 1] = base + picked end
  picks[#picks + 1] = picked
  base = base + size
end
for _, k in ipairs(take) do
  redis.call('ZADD', KEYS[k], now + lease, holder)
  redis.call('PEXPIRE', KEYS[k], lease * 2)
end
return picks
"""

# Renew every (scope, holder) pair given: ARGV = lease, then holder per key. A holder whose lease
# was reaped while Redis was away is added back: the session is alive and must be counted.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, lease * 2)
end
return #KEYS
"""

_RELEASE = """
for _, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[1]) end
return #KEYS
"""

_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


class RedisState:
    """One process's view of the fleet's shared state (install it with `voicerouter.fleet.install`)."""

    def __init__(
        self,
        config: StateConfig,
        url: str,
        *,
        node_id: str | None = None,
        describe: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self.url = url
        self.prefix = config.prefix
        self.max_sessions = config.max_sessions
        self.lease_ms = int(config.lease_s * 1000)
        self.reserve_ms = int(config.reserve_s * 1000)
        self.timeout_s = config.timeout_ms / 1000
        self.node = node_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.describe = describe or (lambda: {})
        self.connected = False
        self.lost_since: float | None = None  # unix time Redis was lost (None: connected or never)
        self.losses = 0
        self.slow_calls = 0  # calls decided locally because Redis did not answer within timeout_ms
        self.last_error: str | None = None
        self.nodes_seen = 1
        self._held: dict[str, list[tuple[str, int]]] = {}  # holder -> [(slots key, limit)]
        self._permits: dict[str, float] = {}  # instance key -> monotonic expiry of our probe permit
        self._remote_open: dict[str, tuple[str, float]] = {}  # instance key -> (reason, monotonic end)
        self._fleet_unhealthy: set[str] = set()
        self._applying = False
        self._buses: weakref.WeakSet[EventBus] = weakref.WeakSet()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        # Set by aclose: the background tasks also stop on it, since a cancellation can be swallowed
        # inside the Redis client (seen on a busy machine: the sync loop went on after cancel()).
        self._closing = False
        self._listen_task: asyncio.Task[None] | None = None
        self._redis: Any = None
        self._pubsub_client: Any = None
        self.subscribed = asyncio.Event()  # set while this process hears the fleet's breaker messages

    # ---- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (without waiting long: an unreachable Redis means local state, said once) and start syncing."""
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        common: dict[str, Any] = {"socket_connect_timeout": max(self.timeout_s, 0.2), "retry": Retry(NoBackoff(), 0)}
        self._redis = Redis.from_url(self.url, socket_timeout=max(self.timeout_s, 0.2), **common)
        self._pubsub_client = Redis.from_url(self.url, **common)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._admit = self._redis.register_script(_ADMIT)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._count = self._redis.register_script(_COUNT)
        local_state.STATE_HOOKS.append(self.attach)
        for state in local_state.states():
            self.attach(state)
        if await self._try(self._redis.ping()) is not None:
            await self._resync()
        else:
            self._lost(self.last_error or "unreachable")
        self._loop_task = asyncio.create_task(self._loop(), name="fleet-sync")
        self._listen_task = asyncio.create_task(self._listen(), name="fleet-events")

    async def aclose(self) -> None:
        """Leave the fleet: release this process's slots, drop its registry entry, stop syncing."""
        self._closing = True
        for task in (self._loop_task, self._listen_task, *self._tasks):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._loop_task, self._listen_task, *self._tasks) if t is not None),
                             return_exceptions=True)
        with contextlib.suppress(ValueError):
            local_state.STATE_HOOKS.remove(self.attach)
        for state in local_state.states():
            if state.breaker.on_change is not None:
                state.breaker.on_change = None
                state.breaker.probe_gate = None
        if self.connected:
            for holder in list(self._held):
                await self.release(holder)
            await self._try(self._redis.delete(self._key("node", self.node)))
            await self._try(self._redis.srem(self._key("nodes"), self.node))
        for client in (self._redis, self._pubsub_client):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()

    def watch(self, bus: EventBus) -> None:
        self._buses.add(bus)
        if not self.connected:
            bus.emit(EventType.WARNING, stage="state", reason="state_local",
                     message=f"shared state (Redis) unreachable: limits and breakers are this process's own "
                     f"({self.last_error or 'not connected'})")

    def status(self) -> dict[str, Any]:
        return {
            "backend": "redis",
            "node": self.node,
            "connected": self.connected,
            "mode": "shared" if self.connected else "local",
            "lost_since": self.lost_since,
            "losses": self.losses,
            "slow_calls": self.slow_calls,
            "last_error": self.last_error,
            "nodes_seen": self.nodes_seen,
            "sessions_held": len(self._held),
            "lease_s": self.lease_ms / 1000,
        }

    # ---- slots -------------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _holder(self, holder: str) -> str:
        return f"{self.node}/{holder}"

    async def acquire(self, holder: str, scopes: list[tuple[str, int]]) -> int:
        keys = [(self._key("slots", scope), limit) for scope, limit in scopes]
        if not keys:
            return 0
        if self.connected:
            full = await self._try(self._acquire(keys=[k for k, _ in keys],
                                                 args=[self._holder(holder), self.lease_ms, *(n for _, n in keys)]),
                                   on_call_path=True)
            if full is not None:
                if int(full) == 0:
                    self._held.setdefault(holder, []).extend(keys)
                return int(full)
        # Local state: at most this process's share of each limit.
        for index, (key, limit) in enumerate(keys, start=1):
            mine = sum(1 for h, held in self._held.items() if h != holder and any(k == key for k, _ in held))
            if mine >= math.ceil(limit / max(1, self.nodes_seen)):
                if self.connected:  # it timed out: Redis may have taken the slots all the same
                    self._spawn(self._try(self._release(keys=[k for k, _ in keys], args=[self._holder(holder)]),
                                          quiet=True))
                return index
        self._held.setdefault(holder, []).extend(keys)
        return 0

    @staticmethod
    def reservation_holder(call_id: str) -> str:
        """The fleet-wide holder of a call's reserved slots (the session's id is the call's)."""
        return f"call/{call_id}"

    async def reserve(self, call_id: str, fixed: list[tuple[str, int]],
                      groups: list[tuple[list[tuple[str, int]], bool]]) -> tuple[int, list[int]] | None:
        """A webhook's admission: the call's slots fleet-wide under its reservation holder, for
        `state.reserve_s` (not renewed), claimed by the session's own admission when the stream
        arrives. Same answers as `admit`; None when Redis cannot decide (the stream's admission will)."""
        if not self.connected:
            return None
        reply = await self._run_admit(self.reservation_holder(call_id), self.reserve_ms, fixed, groups, claim="")
        if reply is not None and reply[0] == 0:
            await self._try(self._redis.set(self._key("call", call_id), self.node, px=self.reserve_ms),
                            on_call_path=True)
        return reply

    async def reserved_call(self, call_id: str) -> bool:
        """Whether a webhook of the fleet answered this call a moment ago (its reservation is live)."""
        if not self.connected:
            return False
        return bool(await self._try(self._redis.exists(self._key("call", call_id)), on_call_path=True))

    async def _run_admit(self, full_holder: str, lease_ms: int, fixed: list[tuple[str, int]],
                         groups: list[tuple[list[tuple[str, int]], bool]], *, claim: str) -> tuple[int, list[int]] | None:
        keyed_fixed = [(self._key("slots", scope), limit) for scope, limit in fixed]
        keyed_groups = [([(self._key("slots", scope), limit) for scope, limit in candidates], optional)
                        for candidates, optional in groups]
        keys = [k for k, _ in keyed_fixed] + [k for candidates, _ in keyed_groups for k, _ in candidates]
        if not keys:
            return 0, [0] * len(keyed_groups)
        limits = [n for _, n in keyed_fixed] + [n for candidates, _ in keyed_groups for _, n in candidates]
        shape = [x for candidates, optional in keyed_groups for x in (len(candidates), int(optional))]
        reply = await self._try(self._admit(keys=keys, args=[full_holder, lease_ms, len(keyed_fixed), len(keyed_groups),
                                                             *shape, *limits, claim]), on_call_path=True)
        if reply is None:
            return None
        return int(reply[0]), [int(x) for x in reply[1:]]

    async def admit(self, holder: str, fixed: list[tuple[str, int]],
                    groups: list[tuple[list[tuple[str, int]], bool]]) -> tuple[int, list[int]]:
        """A session's slots in one decision: every `fixed` scope, and per group (candidates, optional)
        the first candidate with room. Returns (0, 1-based pick per group, 0 for none), or (1, [i]) when
        fixed scope i is full, or (2, [g]) when no candidate of group g has room. A reservation a
        webhook made for this session (`reserve`) is claimed: its slots leave as the session's enter."""
        keyed_fixed = [(self._key("slots", scope), limit) for scope, limit in fixed]
        keyed_groups = [([(self._key("slots", scope), limit) for scope, limit in candidates], optional)
                        for candidates, optional in groups]
        if self.connected:
            reply = await self._run_admit(self._holder(holder), self.lease_ms, fixed, groups,
                                          claim=self.reservation_holder(holder))
            if reply is not None:
                code, rest = reply
                if code == 0:
                    taken = keyed_fixed + [candidates[p - 1] for (candidates, _), p in zip(keyed_groups, rest,
                                                                                              strict=True) if p]
                    if taken:
                        self._held.setdefault(holder, []).extend(taken)
                return code, rest
        return self._admit_locally(holder, keyed_fixed, keyed_groups)

    def _admit_locally(self, holder: str, fixed: list[tuple[str, int]],
                       groups: list[tuple[list[tuple[str, int]], bool]]) -> tuple[int, list[int]]:
        """The same decision on this process's share of each limit (Redis away or late)."""

        def room(key: str, limit: int) -> bool:
            mine = sum(1 for h, held in self._held.items() if h != holder and any(k == key for k, _ in held))
            return mine < math.ceil(limit / max(1, self.nodes_seen))

        def refuse(result: tuple[int, list[int]]) -> tuple[int, list[int]]:
            if self.connected:  # Redis was only late: it may have taken the slots all the same
                keys = [k for k, _ in fixed] + [k for candidates, _ in groups for k, _ in candidates]
                self._spawn(self._try(self._release(keys=keys, args=[self._holder(holder)]), quiet=True))
            return result

        for index, (key, limit) in enumerate(fixed, start=1):
            if not room(key, limit):
                return refuse((1, [index]))
        picks: list[int] = []
        taken = list(fixed)
        for number, (candidates, optional) in enumerate(groups, start=1):
            pick = next((j for j, (key, limit) in enumerate(candidates, start=1) if room(key, limit)), 0)
            if pick == 0 and not optional:
                return refuse((2, [number]))
            if pick:
                taken.append(candidates[pick - 1])
            picks.append(pick)
        if taken:
            self._held.setdefault(holder, []).extend(taken)
        return 0, picks

    async def release(self, holder: str) -> None:
        keys = self._held.pop(holder, [])
        if keys and self.connected:
            await self._try(self._release(keys=[k for k, _ in keys], args=[self._holder(holder)]), on_call_path=True)

    async def count(self, scope: str) -> int | None:
        """Slots taken fleet-wide in `scope` (None when Redis cannot be asked)."""
        value = await self._try(self._count(keys=[self._key("slots", scope)]))
        return None if value is None else int(value)

    async def _renew_all(self) -> None:
        pairs = [(key, self._holder(holder)) for holder, keys in self._held.items() for key, _ in keys]
        if pairs:
            await self._try(self._renew(keys=[k for k, _ in pairs], args=[self.lease_ms, *(h for _, h in pairs)]))

    # ---- breakers ----------------------------------------------------------------------------------

    def attach(self, state: ProviderState) -> None:
        breaker = state.breaker
        breaker.on_change = lambda new, old, reason: self._breaker_changed(state, new, reason)
        breaker.probe_gate = lambda: self._may_probe(state)
        remote = self._remote_open.get(state.key)
        if remote is not None and remote[1] > time.monotonic():
            self._apply_open(state, remote[0], remote[1] - time.monotonic())

    def _may_probe(self, state: ProviderState) -> bool:
        if not self.connected:
            return True  # local state: this process's breaker decides alone
        until = self._permits.get(state.key)
        return until is not None and until > time.monotonic()

    def _breaker_changed(self, state: ProviderState, new: str, reason: str) -> None:
        if self._applying:
            return
        self._permits.pop(state.key, None)
        if new == "half_open":
            return
        self._spawn(self._publish_breaker(state, new, reason))

    async def _publish_breaker(self, state: ProviderState, new: str, reason: str) -> None:
        if not self.connected:
            return  # republished by the resync when Redis is back
        key = self._key("breaker", state.key)
        message = json.dumps({"kind": "breaker", "key": state.key, "state": new, "node": self.node,
                              "reason": redact(reason)[:300],
                              "cooldown_ms": int(state.breaker.config.cooldown_s * 1000)})
        pipe = self._redis.pipeline(transaction=False)
        if new == "open":
            pipe.set(key, message, px=max(1, int(state.breaker.config.cooldown_s * 1000)))
        else:
            pipe.delete(key)
        pipe.delete(self._key("probe", state.key))
        pipe.publish(self._key("events"), message)
        await self._try(pipe.execute())

    def _apply_open(self, state: ProviderState, reason: str, remaining_s: float) -> None:
        was = state.breaker.state
        self._applying = True
        try:
            state.breaker.sync_open(reason, remaining_s)
        finally:
            self._applying = False
        if was != "open":
            self._emit_breaker(state, "open", was, reason)

    def _apply_close(self, state: ProviderState, reason: str) -> None:
        was = state.breaker.state
        self._applying = True
        try:
            state.breaker.sync_close(reason)
        finally:
            self._applying = False
        if was != "closed":
            self._emit_breaker(state, "closed", was, reason)

    def _emit_breaker(self, state: ProviderState, new: str, previous: str, reason: str) -> None:
        for bus in list(state.buses):
            bus.emit(EventType.BREAKER, provider=state.name, state=new, previous=previous, reason=reason,
                     failures=state.breaker.consecutive, cooldown_s=state.breaker.config.cooldown_s, source="fleet")

    def _on_message(self, data: dict[str, Any]) -> None:
        if data.get("kind") != "breaker" or data.get("node") == self.node:
            return
        key = str(data.get("key"))
        reason = f"{data.get('reason')} (in {data.get('node')})"
        state = local_state.find_state(key)
        if data.get("state") == "open":
            cooldown = float(data.get("cooldown_ms") or 0) / 1000
            self._remote_open[key] = (reason, time.monotonic() + cooldown)
            if state is not None:
                self._apply_open(state, reason, cooldown)
        else:
            self._remote_open.pop(key, None)
            if state is not None:
                self._apply_close(state, f"probe succeeded in {data.get('node')}")

    async def _load_open_breakers(self) -> None:
        """Breakers the fleet has open now (a process that starts or comes back missed their messages)."""

        async def scan() -> list[tuple[Any, Any]]:
            found = []
            async for key in self._redis.scan_iter(match=self._key("breaker", "*"), count=500):
                found.append((await self._redis.get(key), await self._redis.pttl(key)))
            return found

        entries = await self._try(scan())
        for raw, left_ms in entries or []:
            with contextlib.suppress(ValueError, TypeError):
                data = json.loads(raw)
                if data.get("node") != self.node and left_ms and left_ms > 0:
                    self._on_message({**data, "cooldown_ms": left_ms})

    async def _sync_breakers(self) -> None:
        """Open breakers the fleet has open; claim the probe permit of ours that have cooled."""
        for state in local_state.states():
            breaker = state.breaker
            if breaker.state != "open":
                continue
            left_ms = await self._try(self._redis.pttl(self._key("breaker", state.key)))
            if left_ms is None:
                return
            if left_ms > 0:
                if breaker.cooled():
                    self._apply_open(state, breaker_reason(state), left_ms / 1000)
                continue
            if not breaker.cooled() or self._may_probe(state):
                continue
            won = await self._try(self._redis.set(self._key("probe", state.key), self.node, nx=True,
                                                  px=int(PROBE_S * 1000)))
            if won:
                self._permits[state.key] = time.monotonic() + PROBE_S * 0.8

    # ---- health and latency ------------------------------------------------------------------------

    async def _share_health(self) -> None:
        states = local_state.states()
        if not states:
            return
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        for state in states:
            key = self._key("health", state.key)
            own_unhealthy = not state.healthy and state.key not in self._fleet_unhealthy
            pipe.hset(key, self.node, json.dumps({"healthy": not own_unhealthy, "error": redact(state.last_error or "")[:300]
                                                  if own_unhealthy else None, "latency_s": state.latency_s, "t": now}))
            pipe.pexpire(key, int(FRESH_S * 2000))
            pipe.hgetall(key)
        replies = await self._try(pipe.execute())
        if replies is None:
            return
        for state, views in zip(states, replies[2::3], strict=True):
            self._merge_health(state, views, now)

    def _merge_health(self, state: ProviderState, views: dict[Any, Any], now: float) -> None:
        others: list[tuple[str, dict[str, Any]]] = []
        latencies: list[float] = []
        for node, raw in views.items():
            with contextlib.suppress(ValueError, TypeError):
                view = json.loads(raw)
                if now - float(view.get("t", 0)) > FRESH_S:
                    continue
                if view.get("latency_s") is not None:
                    latencies.append(float(view["latency_s"]))
                name = node.decode() if isinstance(node, bytes) else str(node)
                if name != self.node:
                    others.append((name, view))
        if latencies:
            state.latency_s = sum(latencies) / len(latencies)  # least_latency sees the fleet's view
        sick = [(n, v) for n, v in others if not v.get("healthy")]
        if sick and state.healthy:
            node, view = sick[0]
            self._fleet_unhealthy.add(state.key)
            state.mark_unhealthy(f"{view.get('error') or 'unhealthy'} (seen by {node})")
            self._emit_health(state, False, state.last_error)
        elif not sick and state.key in self._fleet_unhealthy:
            self._fleet_unhealthy.discard(state.key)
            if not state.healthy:
                state.mark_healthy()
                self._emit_health(state, True, None)

    def _emit_health(self, state: ProviderState, healthy: bool, error: str | None) -> None:
        for bus in list(state.buses):
            bus.emit(EventType.HEALTH, provider=state.name, healthy=healthy, error=error, source="fleet")

    # ---- the node registry -------------------------------------------------------------------------

    async def _register(self) -> None:
        info = {"id": self.node, "pid": os.getpid(), "host": socket.gethostname(), "t": time.time(),
                **self.describe()}
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(self._key("node", self.node), mapping={k: json.dumps(v) for k, v in info.items()})
        pipe.pexpire(self._key("node", self.node), self.lease_ms)
        pipe.sadd(self._key("nodes"), self.node)
        if await self._try(pipe.execute()) is not None:
            nodes = await read_nodes(self._redis, self.prefix, timeout_s=self.timeout_s)
            if nodes is not None:
                self.nodes_seen = max(1, len(nodes))

    # ---- the background loop -----------------------------------------------------------------------

    async def _loop(self) -> None:
        last_renew = last_share = time.monotonic()
        while not self._closing:
            await asyncio.sleep(TICK_S)
            if self._closing:
                return
            now = time.monotonic()
            if not self.connected:
                if await self._try(self._redis.ping(), quiet=True) is not None:
                    await self._resync()
                continue
            try:
                await self._sync_breakers()
                if now - last_renew >= self.lease_ms / 3000:
                    last_renew = now
                    await self._renew_all()
                    await self._register()
                if now - last_share >= SHARE_S:
                    last_share = now
                    await self._share_health()
            except Exception as exc:  # the sync loop must outlive any surprise; say what it was
                log.warning("fleet sync: %s", redact(repr(exc)))

    async def _listen(self) -> None:
        channel = self._key("events")
        while not self._closing:
            pubsub = self._pubsub_client.pubsub()
            try:
                await pubsub.subscribe(channel)
                self.subscribed.set()
                while not self._closing:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    with contextlib.suppress(ValueError, TypeError):
                        self._on_message(json.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception:
                self.subscribed.clear()
                await asyncio.sleep(0.5)  # Redis away: the main loop notices and says so
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _resync(self) -> None:
        """Redis answers (again): renew our sessions' slots, republish our open breakers, read the fleet's."""
        self.connected = True
        await self._renew_all()
        for state in local_state.states():
            if state.breaker.state == "open" and not state.breaker.cooled():
                await self._publish_breaker(state, "open", breaker_reason(state))
        await self._register()
        await self._load_open_breakers()
        await self._sync_breakers()
        if not self.connected:
            return
        if self.lost_since is not None:
            down = time.time() - self.lost_since
            self.lost_since = None
            log.warning("shared state (Redis) is back after %.1f s: limits and breakers are the fleet's again", down)
            for bus in list(self._buses):
                bus.emit(EventType.WARNING, stage="state", reason="state_shared",
                         message=f"shared state (Redis) is back after {down:.1f} s")

    def _lost(self, error: str) -> None:
        first = self.connected or self.lost_since is None
        self.connected = False
        self.last_error = error
        self._permits.clear()
        if not first:
            return
        self.losses += 1
        self.lost_since = time.time()
        message = (f"shared state (Redis) unreachable ({error}): using this process's own limits "
                   f"(its share: 1/{self.nodes_seen} of each) and breakers until it is back")
        log.warning("%s", message)
        for bus in list(self._buses):
            bus.emit(EventType.WARNING, stage="state", reason="state_local", message=message)

    async def _try(self, operation: Awaitable[T], *, on_call_path: bool = False, quiet: bool = False) -> T | None:
        """Run one Redis operation; None (and local state for what asked) when it fails.

        On a call's path the wait is bounded by `state.timeout_ms`; a call that times out is decided
        locally, but only a refused or broken connection (or the background loop's own failures,
        which wait up to BACKGROUND_TIMEOUT_S) switches the process to local state: a busy event loop
        that answers late is not a lost Redis.
        """
        try:
            async with asyncio.timeout(self.timeout_s if on_call_path else BACKGROUND_TIMEOUT_S):
                return await operation
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            if on_call_path:
                self.slow_calls += 1
            elif not quiet:
                self._lost(f"no answer within {BACKGROUND_TIMEOUT_S:.1f} s")
            return None
        except Exception as exc:  # redis errors, refused connections: all mean "Redis is away"
            if not quiet:
                self._lost(redact(str(exc) or type(exc).__name__)[:200])
            return None

    def _spawn(self, work: Awaitable[None]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(work)  # type: ignore[arg-type]
        except RuntimeError:
            if asyncio.iscoroutine(work):
                work.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def breaker_reason(state: ProviderState) -> str:
    return state.last_error or "open"


async def read_nodes(client: Any, prefix: str, *, timeout_s: float = 1.0) -> list[dict[str, Any]] | None:
    """The live processes of a fleet (their registry entries), pruning the set of those gone."""
    try:
        async with asyncio.timeout(timeout_s):
            ids = sorted(x.decode() if isinstance(x, bytes) else str(x) for x in await client.smembers(prefix + "nodes"))
            pipe = client.pipeline(transaction=False)
            for node in ids:
                pipe.hgetall(f"{prefix}node:{node}")
            entries = await pipe.execute()
            gone = [node for node, entry in zip(ids, entries, strict=True) if not entry]
            if gone:
                await client.srem(prefix + "nodes", *gone)
    except asyncio.CancelledError:
        raise
    except Exception:
        return None
    nodes = []
    for entry in entries:
        if entry:
            nodes.append({(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in entry.items()})
    return nodes


async def connect(config: StateConfig, url: str, **kwargs: Any) -> RedisState:
    state = RedisState(config, url, **kwargs)
    await state.start()
    return state
