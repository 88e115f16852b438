"""The `voicerouter` command: a thin typer app; each command lives in its own module.

Command modules import only typer and the standard library at the top, so `validate` and
`resolve` start fast; heavy libraries load inside the command that needs them.
"""

from __future__ import annotations

import importlib
import sys

import typer

COMMANDS = (
    "resolve",
    "validate",
    "schema",
    "providers",
    "check",
    "emulate",
    "replay",
    "run",
    "devices",
    "report",
)

app = typer.Typer(
    name="voicerouter",
    help="Route voice sessions to STT, TTS and speech-to-speech providers, with failover.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

for _name in COMMANDS:
    try:
        _module = importlib.import_module(f"voicerouter.cli.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"voicerouter.cli.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:
    from voicerouter.cli.common import run_app

    sys.exit(run_app(app))


if __name__ == "__main__":
    main()
