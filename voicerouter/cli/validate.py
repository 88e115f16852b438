"""`voicerouter validate FILE...`: check routing tables in CI (exit 0 valid, 1 invalid, 2 usage)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from voicerouter.routing.validate import ValidationReport


class Format(StrEnum):
    text = "text"
    json = "json"
    github = "github"


SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def validate(
    files: Annotated[list[Path], typer.Argument(help="Routing table files to check.", show_default=False, metavar="FILE...")],
    format: Annotated[Format, typer.Option("--format", "-f", help="text for people, json for scripts, github for Actions annotations.")] = Format.text,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings (literal secrets, unused providers, ...) as errors; notes (unset variables) never fail.")] = False,
    select: Annotated[list[str] | None, typer.Option("--select", metavar="RULE", help="Only these rules: ids (VR205), prefixes (VR2) or names (unknown-provider); repeatable or comma-separated.")] = None,
    ignore: Annotated[list[str] | None, typer.Option("--ignore", metavar="RULE", help="Leave out these rules (same forms as --select), e.g. --ignore unset-env.")] = None,
) -> None:
    """Check routing tables: schema, provider references and kinds, shadowed routes, URLs and secrets."""
    from voicerouter.cli.cached import run_validate
    from voicerouter.cli.output import quiet

    code = run_validate(list(files), fmt="json" if json_out else format.value, strict=strict,
                        select=select or [], ignore=ignore or [], quiet=quiet())
    if code:
        raise typer.Exit(code)


def render_text(report: ValidationReport) -> None:
    """One line per finding (`file:line:col: severity: message [VR205 unknown-provider]`), then a summary."""
    from rich.text import Text

    from voicerouter.cli.common import stdout_console
    from voicerouter.cli.output import quiet
    from voicerouter.routing.validate import summary

    console = stdout_console()
    for f in report.findings:
        line = Text(f"{f.location}: ")
        line.append(f.severity, style=SEVERITY_STYLE[f.severity])
        line.append(f": {f.message} ")
        line.append(f"[{f.rule_id} {f.code}]", style="dim")
        console.print(line)
    if not quiet():
        console.print(Text(summary(report), style="green" if report.valid else "bold red"))


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
