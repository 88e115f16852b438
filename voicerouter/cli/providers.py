"""`voicerouter providers`: which provider types exist, what they need, and whether their keys are set."""

from __future__ import annotations

from typing import Annotated, Any

import typer


def describe_types(env: dict[str, str]) -> list[dict[str, Any]]:
    """One JSON-ready row per registered type; env vars say only whether they are set."""
    import importlib.util

    from voicerouter.providers.registry import provider_types
    from voicerouter.testing.server import EMULATORS

    rows = []
    for ptype in provider_types().values():
        rows.append({
            "type": ptype.name,
            "kinds": list(ptype.kinds),
            "required": list(ptype.required),
            "env": {var: bool(env.get(var)) for var in ptype.env_vars},
            "local": ptype.local,
            "emulator": ptype.name in EMULATORS and importlib.util.find_spec(EMULATORS[ptype.name]) is not None,
            "description": ptype.description,
        })
    return rows


def providers(
    json_out: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List provider types: kinds, required options, key variables (set or not), offline or cloud."""
    import os

    rows = describe_types(dict(os.environ))
    if json_out:
        import json

        typer.echo(json.dumps({"providers": rows, "provider_count": len(rows)}, indent=2))
        return
    from rich.table import Table

    from voicerouter.cli.common import stdout_console

    table = Table(title="provider types", title_justify="left")
    for column in ("type", "kinds", "needs", "key variable", "runs", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        env = ", ".join(f"{var} [{'green]set' if is_set else 'red]unset'}[/]" for var, is_set in row["env"].items())
        table.add_row(
            row["type"], "/".join(row["kinds"]), ", ".join(row["required"]) or "-", env or "-",
            "offline" if row["local"] else "cloud", row["description"],
        )
    stdout_console().print(table)


def register(app: typer.Typer) -> None:
    app.command("providers")(providers)
