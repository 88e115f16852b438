"""`voicerouter call`: place an outbound call through the route's carriers, with failover.

Prints which carrier took the call, its ids, and every attempt; exit 0 placed, 3 every carrier
failed, 5 the recipient was refused (invalid number, opted out: no other carrier was tried),
6 the outcome is unknown (it may have been placed; not retried elsewhere).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from voicerouter.resilience.carrier import Outcome


def call(
    to: Annotated[str, typer.Argument(help="The number to call, E.164 (+15550111).", show_default=False)],
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant id (picks the route).")] = None,
    region: Annotated[str | None, typer.Option("--region", "-r", help="Region, e.g. eu-west-1.")] = None,
    flag: Annotated[list[str] | None, typer.Option("--flag", help="Feature flag: NAME or NAME=true|false (repeatable).")] = None,
    from_number: Annotated[str | None, typer.Option("--from", help="Caller id, E.164 (default: the carrier's `from`).")] = None,
    url: Annotated[str | None, typer.Option("--url", help="TwiML/TeXML document URL the carrier fetches when the call is answered.")] = None,
    serve_url: Annotated[str | None, typer.Option("--serve", help="Public URL of a `voicerouter serve`: the callee talks to a session there.")] = None,
    twiml: Annotated[str | None, typer.Option("--twiml", help="Inline TwiML/TeXML, e.g. '<Response><Say>Hi</Say></Response>'.")] = None,
    status_callback: Annotated[str | None, typer.Option("--status-callback", help="URL the carrier POSTs call status events to.")] = None,
    routes: Annotated[Path | None, typer.Option("--routes", help="Routing table (default: $VOICEROUTER_ROUTES, then ./routes.yaml).")] = None,
    inject: Annotated[str | None, typer.Option("--inject", help="Inject faults, e.g. tw-call=error:503 or tw-call=error:21610.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for fault injection.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Place an outbound call through the route's call carriers (Twilio, Telnyx), failing over between them."""
    from voicerouter.cli.common import parse_flags
    from voicerouter.errors import UsageError
    from voicerouter.outbound import place_call

    if sum(x is not None for x in (url, serve_url, twiml)) != 1:
        raise UsageError("give exactly one of --url, --serve or --twiml", hint="what the callee hears when they answer")
    table, faults = _table_and_faults(routes, inject, seed)
    outcome = asyncio.run(place_call(
        table, to, tenant=tenant, region=region, flags=parse_flags(flag), from_number=from_number, url=url,
        twiml=twiml, serve_url=serve_url, status_callback=status_callback, faults=faults,
    ))
    report(outcome, "call", json_out)


def _table_and_faults(routes: Path | None, inject: str | None, seed: int | None) -> tuple[Any, Any]:
    from voicerouter.cli.common import find_routes
    from voicerouter.config.loader import load_routes
    from voicerouter.session.replay import faults_for

    table = load_routes(find_routes(routes))
    return table, faults_for(table, inject, seed)


def report(outcome: Outcome[Any], what: str, json_out: bool) -> None:
    """Print the outcome (text or JSON); a failure ends with its error line and exit code."""
    from voicerouter.cli.common import print_error, stdout_console

    if json_out:
        import json

        typer.echo(json.dumps(outcome.to_dict(), indent=2))
    else:
        out = stdout_console()
        result = outcome.result
        summary = (f"route {outcome.route}, {len(outcome.attempts)} attempt{'s' * (len(outcome.attempts) != 1)}, "
                   f"{outcome.failovers} failover{'s' * (outcome.failovers != 1)}, {outcome.elapsed_s * 1000:.0f} ms")
        if result is not None:
            extra = "".join(f" {k}={v}" for k, v in getattr(result, "extra_ids", {}).items())
            recovered = " (found by a status check after a lost answer)" if result.recovered else ""
            out.print(f"{what} {'placed' if what == 'call' else 'sent'} via {result.carrier} ({result.carrier_type}): "
                      f"id={result.id} status={result.status}{extra}{recovered}", markup=False, highlight=False)
        out.print(summary, markup=False, highlight=False)
        for index, attempt in enumerate(outcome.attempts, 1):
            state = "ok" if attempt.ok else f"failed ({attempt.reason}) {attempt.error}"
            out.print(f"  {index}. {attempt.carrier} attempt {attempt.attempt}: {state}", markup=False, highlight=False)
    if outcome.error is not None:
        if not json_out:
            print_error(outcome.error)
        raise typer.Exit(outcome.error.exit_code)


def register(app: typer.Typer) -> None:
    app.command("call")(call)
