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
) -> None:
    """Show the session plan for a tenant/region/flags/session id."""
    from voicerouter.cli.common import find_routes, parse_flags
    from voicerouter.config.loader import load_routes
    from voicerouter.routing.plan import RouteContext

    table = load_routes(find_routes(routes))
    kwargs = {"session_id": session_id} if session_id else {}
    ctx = RouteContext(tenant=tenant, region=region, flags=parse_flags(flag), **kwargs)
    plan = table.resolve(ctx)
    if json_out:
        import json

        typer.echo(json.dumps(plan.to_dict(), indent=2))
    else:
        from voicerouter.cli.render_plan import render_plan

        render_plan(plan, table.file)
    if plan.warnings:
        from voicerouter.cli.common import stderr_console

        for warning in plan.warnings:
            stderr_console().print(f"[yellow]warning:[/] {warning}")


def register(app: typer.Typer) -> None:
    app.command("resolve")(resolve)
