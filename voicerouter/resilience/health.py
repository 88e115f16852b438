"""Background health checks: probe each provider every `health.interval_s`, skip it while unhealthy.

One monitor per provider instance per process, shared by the sessions using it (reference
counted; it stops with the last one). A failed probe marks the provider unhealthy; a successful
one marks it healthy again and moves an open breaker to half_open, so the preferred provider is
tried again at the next turn. Without monitoring, an unhealthy mark expires after the breaker's
cooldown (the next real request is then the probe).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from voicerouter.config.schema import HealthConfig
from voicerouter.resilience.retry import as_provider_error
from voicerouter.resilience.state import ProviderState
from voicerouter.session.events import EventType


@dataclass
class HealthMonitor:
    state: ProviderState
    provider: Any
    config: HealthConfig
    users: int = 0
    probes: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def _emit(self, healthy: bool, error: str | None) -> None:
        for bus in list(self.state.buses):
            bus.emit(EventType.HEALTH, provider=self.state.name, healthy=healthy, error=error, source="probe")

    async def probe_once(self) -> bool:
        self.probes += 1
        try:
            async with asyncio.timeout(self.config.timeout_ms / 1000):
                await self.provider.probe()
        except Exception as exc:
            message = "probe timed out" if isinstance(exc, TimeoutError) else as_provider_error(exc, self.state.name).message
            if self.state.mark_unhealthy(message):
                self._emit(False, message)
            return False
        if self.state.mark_healthy():
            self._emit(True, None)
        if self.state.breaker.state == "open":
            self.state.breaker.half_open("health probe succeeded", self._breaker_event)
        return True

    def _breaker_event(self, state: str, previous: str, reason: str) -> None:
        for bus in list(self.state.buses):
            bus.emit(EventType.BREAKER, provider=self.state.name, state=state, previous=previous, reason=reason,
                     failures=self.state.breaker.consecutive, cooldown_s=self.state.breaker.config.cooldown_s)

    async def _loop(self) -> None:
        interval = self.config.interval_s or 0
        while True:
            await self.probe_once()
            await asyncio.sleep(interval)


_MONITORS: dict[str, HealthMonitor] = {}


def is_monitored(state: ProviderState) -> bool:
    monitor = _MONITORS.get(state.key)
    return monitor is not None and monitor.task is not None and not monitor.task.done()


def monitor(state: ProviderState, provider: Any, config: HealthConfig) -> HealthMonitor | None:
    """Start (or join) the monitor of this provider; None when health checks are off."""
    if config.interval_s is None:
        return None
    current = _MONITORS.get(state.key)
    if current is None or current.task is None or current.task.done():
        current = HealthMonitor(state, provider, config)
        current.task = asyncio.get_running_loop().create_task(current._loop(), name=f"health:{state.name}")
        _MONITORS[state.key] = current
    current.users += 1
    return current


async def release(monitor: HealthMonitor) -> None:
    monitor.users -= 1
    if monitor.users <= 0 and monitor.task is not None:
        monitor.task.cancel()
        await asyncio.gather(monitor.task, return_exceptions=True)
        if _MONITORS.get(monitor.state.key) is monitor:
            del _MONITORS[monitor.state.key]


async def stop_all() -> None:
    for monitor in list(_MONITORS.values()):
        monitor.users = 0
        await release(monitor)
