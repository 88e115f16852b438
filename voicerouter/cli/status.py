"""`voicerouter status`: the fleet as its shared state shows it (processes, open breakers, slots in use)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def status(
    state: Annotated[str | None, typer.Option("--state", metavar="URL", help="The fleet's Redis, e.g. redis://127.0.0.1:6379/0 (default: the table's state: url).")] = None,
    routes: Annotated[Path | None, typer.Option("--routes", help="Routing table whose state: section names the Redis (and prefix).")] = None,
    prefix: Annotated[str | None, typer.Option("--prefix", help="Key prefix of the fleet (default: the table's, else voicerouter:).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a fleet of `serve` processes sharing state on Redis: each process, open breakers, slots in use.

    Exit codes: 0 ok, 2 usage error (no state URL), 3 Redis unreachable.
    """
    import asyncio
    import json
    import os

    from voicerouter.config.schema import StateConfig
    from voicerouter.errors import UsageError
    from voicerouter.fleet import state_url
    from voicerouter.fleet.status import fleet_status

    config = StateConfig()
    if routes is not None or (state is None and os.environ.get("VOICEROUTER_ROUTES")):
        from voicerouter.cli.common import find_routes
        from voicerouter.config.loader import load_routes

        config = load_routes(find_routes(routes)).config.state
    url = state_url(config, os.environ, state)
    if url is None:
        raise UsageError("no shared state to look at", hint="pass --state redis://HOST:PORT/DB or a table with state: {backend: redis}")
    data = asyncio.run(fleet_status(url, prefix or config.prefix))
    if json_out:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"fleet at {data['url']} (prefix {data['prefix']}): {len(data['nodes'])} process(es)")
    for node in data["nodes"]:
        flags = " draining" if node.get("draining") else ""
        typer.echo(f"  {node['id']}: {node.get('sessions', 0)} session(s), max {node.get('max_sessions') or '-'}"
                   f", {node.get('url') or '-'}, up {node.get('uptime_s', 0):g} s{flags}")
    if data["breakers"]:
        typer.echo("open breakers:")
        for item in data["breakers"]:
            typer.echo(f"  {item['provider']}: {item['reason']} (opened in {item['node']}, {item['remaining_s']:g} s left)")
    else:
        typer.echo("open breakers: none")
    if data["slots"]:
        typer.echo("slots in use:")
        for scope, taken in data["slots"].items():
            typer.echo(f"  {scope}: {taken}")
    if data["reserved_calls"]:
        typer.echo(f"calls answered, waiting for their media stream: {data['reserved_calls']}")


def register(app: typer.Typer) -> None:
    app.command("status")(status)
