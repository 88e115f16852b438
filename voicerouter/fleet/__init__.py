"""State a fleet of processes shares: session slots, breakers, health and latency (on Redis).

In-memory state (`voicerouter.resilience.state`) is the default and all a single process needs.
With `state: {backend: redis, url: ...}` in the routing table (or `--state redis://...`), each
process installs one `SharedState` for its lifetime; admission (`resilience.capacity`) and every
provider's breaker then consult it. What is shared and what is not:

| what | shared how |
|---|---|
| session slots (`max_concurrent_sessions` per provider and route, `state.max_sessions` fleet-wide) | leases in Redis (a sorted set per limit, Lua scripts on Redis time), renewed while the session lives |
| breakers | a trip is published (a key that lives for the cooldown, plus a pub/sub message): every process opens; one half-open probe per fleet; its success closes everywhere. Failure counting stays local |
| health and least-latency statistics | each process publishes its view every second with a TTL; the others merge it |
| round-robin cursors | local (each process rotates on its own; the spread over a fleet stays even) |
| a slot taken mid-session on failover to a provider not admitted for | local (counted in this process only) |
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from voicerouter.config.schema import StateConfig
    from voicerouter.session.events import EventBus


class SharedState(Protocol):
    """What admission asks a fleet's shared state (see `voicerouter.fleet.redis_state.RedisState`)."""

    max_sessions: int | None

    async def acquire(self, holder: str, scopes: list[tuple[str, int]]) -> int:
        """Take a slot in every scope (name, limit) or none: 0 when taken, else the 1-based index of a full scope."""
        ...

    async def admit(self, holder: str, fixed: list[tuple[str, int]],
                    groups: list[tuple[list[tuple[str, int]], bool]]) -> tuple[int, list[int]]:
        """A session's slots in one decision (see `RedisState.admit`)."""
        ...

    async def reserve(self, call_id: str, fixed: list[tuple[str, int]],
                      groups: list[tuple[list[tuple[str, int]], bool]]) -> tuple[int, list[int]] | None:
        """A webhook's fleet-wide reservation of a call's slots, claimed by its session's `admit`
        (see `RedisState.reserve`); None when the shared state cannot decide now."""
        ...

    async def reserved_call(self, call_id: str) -> bool:
        """Whether some process of the fleet answered this call's webhook and reserved its slots."""
        ...

    async def release(self, holder: str) -> None:
        """Give back every slot `holder` has."""
        ...

    def watch(self, bus: EventBus) -> None:
        """Tell this session's events about the shared state (Redis lost or back) while it lives."""
        ...

    def status(self) -> dict[str, Any]:
        """Connected or local, since when, this process's node id (for /status and /readyz)."""
        ...


_CURRENT: SharedState | None = None


def current() -> SharedState | None:
    """The shared state installed in this process, or None (in-memory state only)."""
    return _CURRENT


def install(state: SharedState | None) -> None:
    global _CURRENT
    _CURRENT = state


def state_url(config: StateConfig, env: Mapping[str, str], override: str | None = None) -> str | None:
    """The Redis URL a process should share state through (`override`: a `--state` flag), or None."""
    from voicerouter.config.secrets import expand, remember_url_credentials
    from voicerouter.errors import UsageError

    raw = override or (config.url if config.backend == "redis" else None)
    if override is None and config.backend == "redis" and not raw:
        raise UsageError("state: {backend: redis} needs a url", hint='add url: "${REDIS_URL}" under state:')
    if not raw:
        return None
    url = expand(raw, env, what="state.url")
    remember_url_credentials(url)  # a password in the URL is a secret like any other
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"the shared state URL must be redis://, rediss:// or unix://, got {url.split(':', 1)[0]}://...",
                         hint="e.g. --state redis://127.0.0.1:6379/0")
    return url


@asynccontextmanager
async def shared_state(
    config: StateConfig, env: Mapping[str, str], override: str | None = None, *,
    describe: Callable[[], dict[str, Any]] | None = None,
) -> AsyncIterator[SharedState | None]:
    """Install the fleet's shared state for the duration of the block (nothing when none is configured)."""
    url = state_url(config, env, override)
    if url is None:
        yield None
        return
    try:
        from voicerouter.fleet.redis_state import RedisState
    except ImportError as exc:  # redis-py is the `fleet` extra
        from voicerouter.errors import UsageError

        raise UsageError(f"shared state on Redis needs redis-py ({exc})",
                         hint="pip install 'voicerouter[fleet]'") from None
    shared = RedisState(config, url, describe=describe)
    await shared.start()
    install(shared)
    try:
        yield shared
    finally:
        install(None)
        await shared.aclose()
