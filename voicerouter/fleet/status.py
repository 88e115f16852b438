"""What a fleet's shared state says about it: live processes, open breakers, slots in use."""

from __future__ import annotations

import json
from typing import Any

from voicerouter.config.secrets import redact
from voicerouter.errors import EXIT_PROVIDER, VoiceRouterError


async def fleet_status(url: str, prefix: str, *, timeout_s: float = 2.0) -> dict[str, Any]:
    """Read the fleet's registry; raises VoiceRouterError (exit 3) when Redis cannot be reached."""
    import asyncio

    from redis.asyncio import Redis

    from voicerouter.fleet.redis_state import read_nodes

    client = Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        try:
            async with asyncio.timeout(timeout_s * 2):
                await client.ping()
                nodes = await read_nodes(client, prefix, timeout_s=timeout_s) or []
                breakers = []
                async for key in client.scan_iter(match=f"{prefix}breaker:*", count=500):
                    raw, left = await client.get(key), await client.pttl(key)
                    if raw is None:
                        continue
                    info = json.loads(raw)
                    instance = info.get("key", "")
                    breakers.append({"provider": instance.split("#", 1)[0], "instance": instance,
                                     "reason": info.get("reason"), "node": info.get("node"),
                                     "remaining_s": round(max(0, left) / 1000, 1)})
                slots: dict[str, int] = {}
                reserved: set[bytes] = set()  # calls a webhook answered whose stream has not claimed them yet
                now_ms = None
                async for key in client.scan_iter(match=f"{prefix}slots:*", count=500):
                    if now_ms is None:
                        seconds, micros = await client.time()
                        now_ms = seconds * 1000 + micros // 1000
                    taken = await client.zcount(key, now_ms, "+inf")
                    holders = await client.zrangebyscore(key, now_ms, "+inf")
                    reserved.update(h for h in holders if h.startswith(b"call/"))
                    name = (key.decode() if isinstance(key, bytes) else key)[len(prefix) + len("slots:"):]
                    if taken:
                        slots[name] = int(taken)
        except (OSError, TimeoutError) as exc:
            raise _unreachable(url, exc) from None
        except Exception as exc:
            if type(exc).__module__.startswith("redis"):
                raise _unreachable(url, exc) from None
            raise
    finally:
        await client.aclose()
    return {"url": redact(_without_password(url)), "prefix": prefix, "nodes": nodes,
            "breakers": sorted(breakers, key=lambda b: b["provider"]), "slots": dict(sorted(slots.items())),
            "reserved_calls": len(reserved)}


def _unreachable(url: str, exc: BaseException) -> VoiceRouterError:
    error = VoiceRouterError(f"cannot reach the fleet's Redis at {_without_password(url)}: {redact(str(exc)) or type(exc).__name__}",
                             hint="check --state (redis://HOST:PORT/DB) and that redis-server runs")
    error.exit_code = EXIT_PROVIDER
    return error


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return scheme + sep + authority + slash + path
