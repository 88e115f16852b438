"""The `voicerouter` command: a thin typer app; each command lives in its own module.

Only the invoked command's module is imported (all of them for --help), and command modules
import heavy libraries inside the command, so `validate` and `resolve` start fast in CI jobs.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

from voicerouter import __version__

if TYPE_CHECKING:
    import typer

COMMANDS = (
    "init",
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
    "serve",
    "load",
    "call",
    "sms",
    "status",
)


def _version(value: bool) -> None:
    import typer

    if value:
        typer.echo(f"voicerouter {__version__}")
        raise typer.Exit()


def build_app(only: str | None = None) -> typer.Typer:
    import typer

    app = typer.Typer(
        name="voicerouter",
        help="Route voice sessions to STT, TTS and speech-to-speech providers, with failover.",
        no_args_is_help=True,
        add_completion=True,  # --install-completion / --show-completion [bash|zsh|fish|powershell]
        context_settings={"help_option_names": ["-h", "--help"]},
        epilog="Exit codes: 0 ok, 1 failed (invalid table, failed expectation, session error), 2 usage error, "
        "3 providers unavailable (all failed, missing secret, capacity), 4 audio device error, "
        "5 recipient refused by a carrier (call/sms: invalid number, opted out), "
        "6 call/sms outcome unknown (may have gone out; not retried), 130 interrupted.",
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def root(
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only results and errors: no notes, summaries or progress bars."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Also log what the library does (INFO) on stderr."),
    ) -> None:
        """Route voice sessions to STT, TTS and speech-to-speech providers, with failover."""
        from voicerouter.cli.output import set_verbosity

        set_verbosity(-1 if quiet else 1 if verbose else 0)

    for name in COMMANDS if only is None else (only,):
        try:
            module = importlib.import_module(f"voicerouter.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"voicerouter.cli.{name}":
                raise
            continue
        module.register(app)
    return app


def _invoked_command(argv: list[str]) -> str | None:
    for arg in argv:
        if arg.startswith("-"):
            return None  # root options (--help, --version): show everything
        return arg if arg in COMMANDS else None
    return None


def __getattr__(name: str) -> typer.Typer:
    # `from voicerouter.cli.app import app` gives the full app (tests, docs) without slowing `main`.
    if name == "app":
        return build_app()
    raise AttributeError(name)


def main() -> None:
    from voicerouter.cli.fast import fast_path

    code = fast_path(sys.argv[1:])  # `resolve`/`validate` answered from the cache, without typer
    if code is not None:
        sys.exit(code)
    from voicerouter.cli.common import run_app
    from voicerouter.shutdown import exit_process

    exit_process(run_app(build_app(_invoked_command(sys.argv[1:]))))


if __name__ == "__main__":
    main()
