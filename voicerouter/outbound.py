"""Outbound calls and messages through a route's carrier chain: `place_call` and `send_sms`.

The routing table picks the route (tenant, region, flags), the route's `call:` / `sms:` stage lists
the carriers, and the resilience layer tries them in order with retries, breakers and health.
Both return an `Outcome` (the call or message, every attempt, the failovers, or the error); they
raise only for a table or request that cannot work at all.

    table = voicerouter.load_routes("routes.yaml")
    outcome = await voicerouter.place_call(table, "+15550111", tenant="acme", url="https://example.com/twiml")
    if outcome.ok: print(outcome.result.carrier, outcome.result.id)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from voicerouter.errors import ConfigError, UsageError
from voicerouter.providers.carrier import E164, CallRequest, PlacedCall, SentMessage, SMSRequest
from voicerouter.resilience.carrier import Attempt, Outcome

if TYPE_CHECKING:
    from voicerouter.providers.pool import ProviderPool
    from voicerouter.resilience.faults import FaultPlan
    from voicerouter.routing.table import RoutingTable
    from voicerouter.session.events import EventBus

__all__ = ["Attempt", "CallRequest", "Outcome", "PlacedCall", "SMSRequest", "SentMessage", "place_call", "send_sms"]


async def place_call(
    table: RoutingTable,
    to: str,
    *,
    tenant: str | None = None,
    region: str | None = None,
    flags: Mapping[str, bool] | None = None,
    from_number: str | None = None,
    url: str | None = None,
    twiml: str | None = None,
    stream_url: str | None = None,
    serve_url: str | None = None,
    status_callback: str | None = None,
    env: Mapping[str, str] | None = None,
    pool: ProviderPool | None = None,
    faults: FaultPlan | None = None,
    bus: EventBus | None = None,
) -> Outcome[PlacedCall]:
    """Place one outbound call through the first carrier of the route's `call:` chain that takes it.

    What the callee hears, exactly one of: `url` (a TwiML/TeXML document), `twiml` (inline),
    `stream_url` (a `wss://` media stream), or `serve_url` (a `voicerouter serve` deployment: the
    carrier fetches its voice webhook, with this call's tenant, region and flags, and the callee
    talks to a session there).
    """
    if sum(x is not None for x in (url, twiml, stream_url, serve_url)) != 1:
        raise UsageError("a call needs exactly one of url, twiml, stream_url or serve_url")
    request = CallRequest(_number(to, "to"), _number(from_number, "from") if from_number else None, url=url,
                          twiml=twiml, stream_url=stream_url, status_callback=status_callback, serve_url=serve_url)
    return await _through(table, "call", lambda chain, query: chain.place(replace(request, serve_query=query)),
                          tenant=tenant, region=region, flags=flags, env=env, pool=pool, faults=faults, bus=bus)


async def send_sms(
    table: RoutingTable,
    to: str,
    text: str,
    *,
    tenant: str | None = None,
    region: str | None = None,
    flags: Mapping[str, bool] | None = None,
    from_number: str | None = None,
    status_callback: str | None = None,
    serve_url: str | None = None,
    env: Mapping[str, str] | None = None,
    pool: ProviderPool | None = None,
    faults: FaultPlan | None = None,
    bus: EventBus | None = None,
) -> Outcome[SentMessage]:
    """Send one SMS through the first carrier of the route's `sms:` chain that takes it.
    `serve_url`: a `voicerouter serve` that records the delivery status callbacks (unless `status_callback`)."""
    if not text.strip():
        raise UsageError("the message text is empty")
    request = SMSRequest(_number(to, "to"), text, _number(from_number, "from") if from_number else None,
                         status_callback=status_callback, serve_url=serve_url)
    return await _through(table, "sms", lambda chain, query: chain.send(replace(request, serve_query=query)),
                          tenant=tenant, region=region, flags=flags, env=env, pool=pool, faults=faults, bus=bus)


def _serve_query(route: str, tenant: str | None, region: str | None, flags: Mapping[str, bool]) -> str:
    """The call's context for a `serve` (its voice webhook routes the answered call; its status
    webhook records the outcome per route)."""
    from urllib.parse import urlencode

    pairs = [(k, v) for k, v in (("tenant", tenant), ("region", region), ("route", route)) if v]
    pairs += [("flag", name if value else f"{name}=false") for name, value in sorted(flags.items())]
    return urlencode(pairs)


def _number(number: str | None, what: str) -> str:
    if number is None or not E164.match(number):
        raise UsageError(f"{what} number {number!r} is not in E.164 form", hint="like +15550100: +, country code, number")
    return number


async def _through(table: RoutingTable, stage_name: str, send: Any, *, tenant: str | None, region: str | None,
                   flags: Mapping[str, bool] | None, env: Mapping[str, str] | None, pool: ProviderPool | None,
                   faults: FaultPlan | None, bus: EventBus | None) -> Any:
    from voicerouter.providers.base import BuildContext, SessionInfo
    from voicerouter.providers.pool import ProviderPool
    from voicerouter.resilience import build_stage
    from voicerouter.routing.plan import RouteContext
    from voicerouter.session.events import EventBus

    ctx = RouteContext(tenant=tenant, region=region, flags=dict(flags or {}))
    plan = table.resolve(ctx)
    stage = plan.call if stage_name == "call" else plan.sms
    if stage is None:
        raise ConfigError(f"route {plan.route!r} has no {stage_name} carriers",
                          hint=f"add `{stage_name}: [carrier, ...]` to the route or to defaults")
    info = SessionInfo(ctx.session_id, tenant=tenant, region=region, route=plan.route, flags=ctx.flags)
    bus = bus or EventBus(ctx.session_id, tenant=tenant, region=region, route=plan.route)
    own_pool = pool is None
    pool = pool or ProviderPool(table.config.providers, BuildContext(env=dict(os.environ if env is None else env),
                                                                     session=info))
    chain = build_stage(stage, pool, plan.resilience, bus, session=info, faults=faults)
    try:
        outcome = await send(chain, _serve_query(plan.route, tenant, region, ctx.flags))
    finally:
        await chain.aclose()
        if own_pool:
            await pool.aclose()
    return dataclasses.replace(outcome, route=plan.route, session_id=ctx.session_id)
