"""`voicerouter sms`: send a text message through the route's carriers, with failover (exit codes as `call`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer


def sms(
    to: Annotated[str, typer.Argument(help="The recipient, E.164 (+15550111).", show_default=False)],
    text: Annotated[str, typer.Argument(help="The message text.", show_default=False)],
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant id (picks the route).")] = None,
    region: Annotated[str | None, typer.Option("--region", "-r", help="Region, e.g. eu-west-1.")] = None,
    flag: Annotated[list[str] | None, typer.Option("--flag", help="Feature flag: NAME or NAME=true|false (repeatable).")] = None,
    from_number: Annotated[str | None, typer.Option("--from", help="Sender, E.164 (default: the carrier's `from`).")] = None,
    status_callback: Annotated[str | None, typer.Option("--status-callback", help="URL the carrier POSTs delivery status events to.")] = None,
    serve_url: Annotated[str | None, typer.Option("--serve", help="Public URL of a `voicerouter serve` that records the delivery status (for `report`).")] = None,
    routes: Annotated[Path | None, typer.Option("--routes", help="Routing table (default: $VOICEROUTER_ROUTES, then ./routes.yaml).")] = None,
    inject: Annotated[str | None, typer.Option("--inject", help="Inject faults, e.g. tw-sms=error:503 or tw-sms=error:21610.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for fault injection.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Send an SMS through the route's sms carriers (Twilio, Telnyx), failing over between them."""
    from voicerouter.cli.call import _table_and_faults, report
    from voicerouter.cli.common import parse_flags
    from voicerouter.outbound import send_sms

    table, faults = _table_and_faults(routes, inject, seed)
    outcome = asyncio.run(send_sms(
        table, to, text, tenant=tenant, region=region, flags=parse_flags(flag), from_number=from_number,
        status_callback=status_callback, serve_url=serve_url, faults=faults,
    ))
    report(outcome, "sms", json_out)


def register(app: typer.Typer) -> None:
    app.command("sms")(sms)
