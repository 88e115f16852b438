"""The calls a `serve` process holds: admission, one session per media stream, event logs, drain.

`CallManager` owns what every call shares (the routing table, the provider pool, the process-wide
capacity) and decides admission through `voicerouter.resilience.capacity`, the one place where
capacity is decided. `MediaCall` runs one media stream: it feeds the transport's decoded audio
into a session of the resolved route and sends the session's replies back, and nothing else;
turns, failover and events are the session core's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from voicerouter.config.secrets import redact
from voicerouter.errors import CapacityError, VoiceRouterError
from voicerouter.providers.base import BuildContext
from voicerouter.resilience import state as resilience_state
from voicerouter.resilience.capacity import ProcessCapacity, refusal_reason
from voicerouter.routing.numbers import CallContext, call_context, parse_flag_params
from voicerouter.routing.plan import SessionPlan
from voicerouter.routing.table import RoutingTable
from voicerouter.serve import metrics
from voicerouter.session.events import EventBus, EventType, JsonlWriter
from voicerouter.transports.base import (
    Audio,
    CallSink,
    CallSource,
    Digit,
    MarkEcho,
    Started,
    Stopped,
    Transport,
    WireMessage,
)

if TYPE_CHECKING:
    from voicerouter.session.session import Session

log = logging.getLogger("voicerouter.serve")

# WebSocket close codes (RFC 6455): 1000 normal, 1001 going away (shutdown), 1008 policy
# (not admitted by a webhook), 1011 server error, 1013 try again later (capacity, draining).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_ERROR = 1011
CLOSE_TRY_LATER = 1013

# A transport that reports more than audio subscribes here: attach(plan, bus, send).
Attach = Callable[[SessionPlan, EventBus, Callable[[WireMessage], None]], None]


@dataclass
class ServeOptions:
    max_sessions: int | None = None
    drain_timeout_s: float = 30.0
    public_url: str | None = None
    out_dir: Path | None = None
    allow_unsigned: bool = False
    state_url: str | None = None  # --state: share limits and breakers with a fleet on Redis


@dataclass
class Refusal:
    reason: str  # capacity | draining | route_capacity | fleet_capacity
    message: str


@dataclass
class LiveCall:
    call_id: str
    transport: str
    plan: SessionPlan
    started: float = field(default_factory=time.monotonic)
    session: Any = None
    close: Callable[[int, str], Awaitable[None]] | None = None


class CallManager:
    def __init__(self, table: RoutingTable, options: ServeOptions, *, env: dict[str, str] | None = None) -> None:
        from voicerouter.providers.pool import ProviderPool

        self.table = table
        self.options = options
        self.env = dict(os.environ if env is None else env)
        self.pool = ProviderPool(table.config.providers, BuildContext(env=self.env))
        self.capacity = ProcessCapacity(options.max_sessions)
        self.live: dict[str, LiveCall] = {}
        self.draining = False
        self.started_at = time.monotonic()
        self.route_problems: dict[str, list[str]] = {}  # route -> stages no provider of which could be built
        self.broken_providers: dict[str, str] = {}
        self.known_tenants = _table_tenants(table)
        self.url: str | None = None  # where this process listens (set once it does)
        self._idle = asyncio.Event()
        self._idle.set()

    # ---- start-up and health -------------------------------------------------------------------

    async def prepare(self) -> None:
        """Build every provider the routes use (loading local models) and note routes that cannot run."""
        import voicerouter.session.session  # noqa: F401  (imported now, not by a first call while others wait)
        from voicerouter.routing.checks import stage_names, used_providers

        broken: dict[str, str] = {}
        names = used_providers(self.table)
        for name in names:
            try:
                self.pool.check_secrets([name])
                self.pool.get(name)
            except VoiceRouterError as exc:
                broken[name] = redact(str(exc))
                log.warning("provider %s cannot be built: %s", name, broken[name])
        with contextlib.suppress(VoiceRouterError):
            await self.pool.preload(n for n in names if n not in broken)
        self.broken_providers = broken
        self.route_problems = {}
        routes = [("defaults", self.table.config.defaults)]
        routes += [(r.name, s) for r, s in zip(self.table.config.routes, self.table.route_settings, strict=True)]
        for route, settings in routes:
            pipeline = settings.pipeline or ("s2s" if settings.s2s is not None else "stt_tts")
            stages = ("s2s",) if pipeline == "s2s" else ("stt", "tts")
            # A stage whose every provider failed to build cannot run (an unset stage is a table matter).
            dead = [s for s in stages if (ns := stage_names(getattr(settings, s))) and all(n in broken for n in ns)]
            if dead:
                self.route_problems[route] = dead

    def ready(self) -> tuple[bool, str]:
        from voicerouter import fleet

        if self.draining:
            return False, "draining"
        if self.capacity.full():
            return False, "full"
        if self.route_problems:
            route, stages = next(iter(self.route_problems.items()))
            return False, f"route {route!r} has no {'/'.join(stages)} provider that could be built"
        shared = fleet.current()
        if shared is not None and not shared.status()["connected"]:
            # Never refuse a call only because Redis is away: this process's own limits apply meanwhile.
            return True, "ready (shared state unreachable: using this process's own limits and breakers)"
        return True, "ready"

    def status(self) -> dict[str, Any]:
        by_route: dict[str, int] = {}
        for call in self.live.values():
            by_route[call.plan.route] = by_route.get(call.plan.route, 0) + 1
        ready, why = self.ready()
        return {
            "ready": ready,
            "reason": why,
            "draining": self.draining,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "sessions": {"active": len(self.live), "max": self.options.max_sessions, "by_route": by_route,
                         "reserved": self.capacity.used - len(self.capacity.active)},
            "providers": resilience_state.snapshot(),
            "unbuildable_providers": dict(self.broken_providers),
            "routes_without_providers": self.route_problems,
            "state": self.state_status(),
        }

    def state_status(self) -> dict[str, Any]:
        from voicerouter import fleet

        shared = fleet.current()
        return {"backend": "memory"} if shared is None else shared.status()

    def describe(self) -> dict[str, Any]:
        """This process as the fleet's registry shows it."""
        return {"sessions": len(self.live), "max_sessions": self.options.max_sessions, "draining": self.draining,
                "url": self.options.public_url or self.url, "uptime_s": round(time.monotonic() - self.started_at, 1)}

    # ---- admission -----------------------------------------------------------------------------

    def context(self, to: str | None, params: dict[str, str]) -> CallContext:
        flags = parse_flag_params([params["flags"]]) if params.get("flags") else {}
        return call_context(self.table.config.numbers, to or params.get("to"), tenant=params.get("tenant") or None,
                            region=params.get("region") or None, flags=flags)

    def plan_for(self, ctx: CallContext, call_id: str) -> SessionPlan:
        return self.table.resolve(ctx.route_context(call_id))

    async def admit_call(self, call_id: str, plan: SessionPlan) -> Refusal | None:
        """A webhook's decision: reserve a slot for the stream to come (in this process, and with a
        fleet's shared state fleet-wide, for a short lease), or say why not."""
        from voicerouter.resilience.capacity import reserve_fleet

        refusal = self._refusal(plan)
        if refusal is None and not self.capacity.reserve(call_id):
            refusal = Refusal("capacity", f"the server is at its limit of {self.options.max_sessions} sessions")
        if refusal is None and (full := await reserve_fleet(plan)) is not None:
            self.capacity.release(call_id)
            refusal = Refusal("fleet_capacity", full)
        if refusal is not None:
            self.record_refusal(call_id, plan, refusal)
        return refusal

    async def answered(self, call_id: str) -> bool:
        """Whether a webhook answered this call: here, or (with a fleet) in any process of it."""
        from voicerouter import fleet

        if self.capacity.reserved(call_id) or call_id in self.capacity.active:
            return True
        shared = fleet.current()
        return shared is not None and await shared.reserved_call(call_id)

    def _refusal(self, plan: SessionPlan) -> Refusal | None:
        if self.draining:
            return Refusal("draining", "the server is draining (shutting down)")
        reason = refusal_reason(plan)
        if reason is not None:
            return Refusal("route_capacity", reason)
        return None

    def record_refusal(self, call_id: str, plan: SessionPlan, refusal: Refusal) -> None:
        tenant = metrics.tenant_label(plan.context.tenant, self.known_tenants)
        metrics.SESSIONS_REFUSED.labels(tenant, plan.route, refusal.reason).inc()
        if self.options.out_dir is not None:
            bus, stream = self._bus(plan, call_id)
            try:
                bus.emit(EventType.REFUSED, message=refusal.message, reason=refusal.reason, error_type="CapacityError",
                         stage="admission")
            finally:
                if stream is not None:
                    stream.close()

    def _bus(self, plan: SessionPlan, call_id: str) -> tuple[EventBus, IO[str] | None]:
        ctx = plan.context
        bus = EventBus(plan.session_id, tenant=ctx.tenant, region=ctx.region, route=plan.route)
        stream = None
        if self.options.out_dir is not None:
            self.options.out_dir.mkdir(parents=True, exist_ok=True)
            stream = (self.options.out_dir / f"{_safe_name(call_id)}.events.jsonl").open("a", encoding="utf-8")
            bus.subscribe(JsonlWriter(stream))
        return bus, stream

    # ---- drain ---------------------------------------------------------------------------------

    async def drain(self) -> int:
        """Refuse new calls, let live ones finish up to the drain timeout, then end the rest.

        Returns how many calls had to be ended.
        """
        self.draining = True
        try:
            async with asyncio.timeout(self.options.drain_timeout_s):
                await self._idle.wait()
            return 0
        except TimeoutError:
            pass
        ended = 0
        for call in list(self.live.values()):
            ended += 1
            if call.session is not None:
                await call.session.stop()
            if call.close is not None:
                with contextlib.suppress(Exception):
                    await call.close(CLOSE_GOING_AWAY, "server shutting down")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._idle.wait()
        return ended

    async def aclose(self) -> None:
        await self.pool.aclose()

    # ---- one media stream ----------------------------------------------------------------------

    async def run_stream(
        self,
        transport: Transport,
        receive: Callable[[], Awaitable[WireMessage | None]],
        outbox: Outbox,
        close: Callable[[int, str], Awaitable[None]],
        *,
        started: Started | None = None,
        attach: Attach | None = None,
    ) -> None:
        """Serve one media stream until it ends.

        `started` is given when the URL carries the context (the generic protocol); `attach(plan,
        bus, send)` lets a transport that reports more than audio (events, the route) subscribe.
        """
        if self.draining:
            await close(CLOSE_TRY_LATER, "server draining: call again later")
            return
        while started is None:
            message = await receive()
            if message is None:
                return
            try:
                items = transport.decode(message)
            except (ValueError, KeyError, TypeError) as exc:
                await close(CLOSE_POLICY, f"bad message: {redact(str(exc))}"[:120])
                return
            started = next((i for i in items if isinstance(i, Started)), None)
        call_id = started.call_id or started.stream_id
        if not self.options.allow_unsigned and transport.name in ("twilio", "telnyx") and not await self.answered(call_id):
            await close(CLOSE_POLICY, "unknown call: media streams are accepted only for calls the webhook answered")
            return
        ctx = self.context(started.params.get("to"), started.params)
        plan = self.plan_for(ctx, call_id)
        refusal = self._refusal(plan)
        if refusal is None and not self.capacity.acquire(call_id):
            refusal = Refusal("capacity", f"the server is at its limit of {self.options.max_sessions} sessions")
        if refusal is not None:
            self.capacity.release(call_id)
            self.record_refusal(call_id, plan, refusal)
            await close(CLOSE_TRY_LATER, f"{refusal.reason}: {refusal.message}"[:120])
            return
        try:
            await self._serve(transport, receive, outbox, close, started, plan, call_id, attach)
        finally:
            self.capacity.release(call_id)

    async def _serve(self, transport: Transport, receive: Callable[[], Awaitable[WireMessage | None]],
                     outbox: Outbox, close: Callable[[int, str], Awaitable[None]], started: Started,
                     plan: SessionPlan, call_id: str,
                     attach: Attach | None) -> None:
        from voicerouter.session.session import Session

        tenant = metrics.tenant_label(plan.context.tenant, self.known_tenants)
        source = CallSource(frame_ms=plan.vad.frame_ms, name=f"{transport.name}:{call_id}",
                            on_lag=metrics.FRAME_LAG.observe)
        sink = CallSink(transport, outbox.put_media, purge=outbox.purge)
        bus, stream = self._bus(plan, call_id)
        bus.subscribe(metrics.observer(tenant, plan.route))
        if attach is not None:
            attach(plan, bus, outbox.put)
        session = Session(plan, self.pool, source, sink, bus=bus, env=self.env, lockstep=False)
        live = LiveCall(call_id, transport.name, plan, session=session, close=close)
        self.live[call_id] = live
        self._idle.clear()
        metrics.SESSIONS_STARTED.labels(tenant, plan.route, transport.name).inc()
        metrics.SESSIONS_ACTIVE.labels(tenant, plan.route).inc()
        runner = asyncio.create_task(session.run())
        reader = asyncio.create_task(self._read(transport, receive, source, sink, session))
        code, reason = CLOSE_NORMAL, "session ended"
        try:
            await asyncio.wait([runner, reader], return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                # The far end hung up (or the socket closed): the session hears the end of input.
                source.end()
                sink.hangup()
            try:
                result = await runner
                if result.reason == "providers_down":
                    code, reason = CLOSE_ERROR, "providers down: every provider of a stage failed twice in a row"
            except CapacityError as exc:
                metrics.SESSIONS_REFUSED.labels(tenant, plan.route, "route_capacity").inc()
                code, reason = CLOSE_TRY_LATER, f"capacity: {redact(exc.message)}"[:120]
            except VoiceRouterError as exc:
                code, reason = CLOSE_ERROR, redact(exc.message)[:120]
            except Exception as exc:  # a bug must end this call, not the server
                log.error("session %s failed: %s", call_id, redact(repr(exc)))
                code, reason = CLOSE_ERROR, "internal error"
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self.live.pop(call_id, None)
            if not self.live:
                self._idle.set()
            metrics.SESSIONS_ACTIVE.labels(tenant, plan.route).dec()
            if stream is not None:
                stream.close()
            await outbox.flush()
            with contextlib.suppress(Exception):
                await close(code, reason)

    async def _read(self, transport: Transport, receive: Callable[[], Awaitable[WireMessage | None]],
                    source: CallSource, sink: CallSink, session: Session) -> None:
        while (message := await receive()) is not None:
            try:
                items = transport.decode(message)
            except (ValueError, KeyError, TypeError):
                continue  # one garbled message is not worth the call
            for item in items:
                if isinstance(item, Audio):
                    source.push(item.pcm, item.sample_rate)
                elif isinstance(item, MarkEcho):
                    sink.confirm(item.name)
                elif isinstance(item, Stopped):
                    return
                elif isinstance(item, Digit):
                    # At the position in the caller's audio where the key came (the audio received so far).
                    session.press(item.digit, source.received_s)


class Outbox:
    """Messages for one WebSocket, sent in order by one writer task.

    `purge()` (barge-in) drops the reply's unsent media and marks (`put_media`), never the other
    messages (the session's events, for the generic protocol).
    """

    def __init__(self, send: Callable[[WireMessage], Awaitable[None]]) -> None:
        self._send = send
        self._queue: deque[tuple[WireMessage, bool]] = deque()
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._task = asyncio.create_task(self._run())

    def put(self, message: WireMessage) -> None:
        self._queue.append((message, False))
        self._empty.clear()
        self._ready.set()

    def put_media(self, message: WireMessage) -> None:
        self._queue.append((message, True))
        self._empty.clear()
        self._ready.set()

    def purge(self) -> None:
        if any(not media for _, media in self._queue):
            self._queue = deque(item for item in self._queue if not item[1])
        else:
            self._queue.clear()

    async def flush(self, timeout: float = 2.0) -> None:
        if self._queue:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._empty.wait()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                message, _ = self._queue.popleft()
                try:
                    await self._send(message)
                except (ConnectionError, RuntimeError):
                    self._queue.clear()  # the socket is gone; the reader will notice
            self._empty.set()


def _safe_name(call_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", call_id)[:100] or "call"


def _table_tenants(table: RoutingTable) -> set[str]:
    from voicerouter.routing.match import as_list

    tenants = {n.tenant for n in table.config.numbers.values() if n.tenant}
    for route in table.config.routes:
        tenants.update(t for t in as_list(route.match.tenant) if not any(c in t for c in "*?["))
    return tenants
