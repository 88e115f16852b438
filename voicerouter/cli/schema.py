"""`voicerouter schema`: the routing table's JSON Schema, for editors (YAML language server) and CI."""

from __future__ import annotations

from typing import Annotated

import typer


def schema(
    indent: Annotated[int, typer.Option(help="JSON indentation.")] = 2,
) -> None:
    """Print the JSON Schema of the routing table."""
    import json

    from voicerouter.config.schema import json_schema

    typer.echo(json.dumps(json_schema(), indent=indent))


def register(app: typer.Typer) -> None:
    app.command("schema")(schema)
