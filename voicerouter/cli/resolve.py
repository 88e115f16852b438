"""`voicerouter resolve`: dry-run which providers and settings a session gets, and why."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def resolve(
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant id.")] = None,
    region: Annotated[str | None, typer.Option("--region", "-r", help="Region, e.g. eu-west-1.")] = None,
    flag: Annotated[list[str] | None, typer.Option("--flag", help="Feature flag: NAME or NAME=true|false (repeatable).")] = None,
    session_id: Annotated[str | None, typer.Option("--session-id", "-s", help="Session id (decides sticky A/B splits); random if unset.")] = None,
    routes: Annotated[Path | None, typer.Option("--routes", help="Routing table (default: $VOICEROUTER_ROUTES, then ./routes.yaml).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    to: Annotated[str | None, typer.Option("--to", help="Explain a phone call to this number (E.164): the table's numbers: give tenant, region and flags; --tenant/--region/--flag override them.")] = None,
) -> None:
    """Show the session plan for a tenant/region/flags/session id, or for a call to a number (--to)."""
    if to is None:
        from voicerouter.cli.cached import run_resolve

        run_resolve(routes, tenant=tenant, region=region, flag=flag or [], session_id=session_id, json_out=json_out)
        return
    from voicerouter.cli.common import find_routes, parse_flags, warn_unused_flags
    from voicerouter.config.loader import load_routes
    from voicerouter.routing.plan import RouteContext

    table = load_routes(find_routes(routes))
    kwargs = {"session_id": session_id} if session_id else {}
    call = None
    if to is not None:
        from voicerouter.routing.numbers import call_context

        call = call_context(table.config.numbers, to, tenant=tenant, region=region, flags=parse_flags(flag))
        ctx = call.route_context(session_id)
    else:
        ctx = RouteContext(tenant=tenant, region=region, flags=parse_flags(flag), **kwargs)
    plan = table.resolve(ctx)
    warn_unused_flags(table.flag_names(), parse_flags(flag), table.file)
    if json_out:
        import json

        data = plan.to_dict()
        if call is not None:
            data["call"] = {"to": call.number, "number_match": call.pattern, "set_by_call": list(call.overridden)}
        typer.echo(json.dumps(data, indent=2))
    else:
        from voicerouter.cli.render_plan import render_plan

        if call is not None:
            typer.echo(f"call: {call.explain()}")
        render_plan(plan.to_dict(), table.file)
    if plan.warnings:
        from voicerouter.cli.common import stderr_console

        for warning in plan.warnings:
            stderr_console().print(f"[yellow]warning:[/] {warning}")


def register(app: typer.Typer) -> None:
    app.command("resolve")(resolve)
