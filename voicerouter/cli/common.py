"""What every command shares: error handling and exit codes, the routes-file lookup, flag parsing."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from voicerouter.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, UsageError, VoiceRouterError, printable

if TYPE_CHECKING:
    import typer
    from rich.console import Console


ROUTES_ENV = "VOICEROUTER_ROUTES"
DEFAULT_ROUTES = "routes.yaml"


def run_app(app: typer.Typer) -> int:
    """Run the typer app; every expected failure becomes one line on stderr and an exit code."""
    import typer

    from voicerouter.cli.output import plain_metavars

    command = typer.main.get_command(app)
    plain_metavars(command)
    from voicerouter.config.secrets import install_log_redaction

    install_log_redaction()  # every log line of every library, whatever handler prints it
    try:
        # Without standalone mode click returns the code of a typer.Exit instead of exiting.
        result = command.main(prog_name="voicerouter", standalone_mode=False)
    except VoiceRouterError as exc:
        print_error(exc)
        return exc.exit_code
    except SystemExit as exc:  # shell completion exits by itself
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # click usage errors and anything unexpected
        # Typer's parser errors (its own click, vendored in newer releases), recognised by class name.
        bases = {cls.__name__ for cls in type(exc).__mro__}
        if "ClickException" in bases:
            exc.show()  # type: ignore[attr-defined]
            return EXIT_USAGE if "UsageError" in bases else EXIT_FAILED
        if os.environ.get("VOICEROUTER_DEBUG"):
            raise
        from voicerouter.config.secrets import redact

        print(
            f"error: internal error: {type(exc).__name__}: {printable(redact(str(exc)))} "
            "(set VOICEROUTER_DEBUG=1 for a traceback and please report it)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return result if isinstance(result, int) else 0


def stdout_is_terminal() -> bool:
    """As rich decides it (TTY_COMPATIBLE=1 or FORCE_COLOR force a terminal), without importing rich."""
    if os.environ.get("TTY_COMPATIBLE") == "1" or os.environ.get("FORCE_COLOR"):
        return True
    return sys.stdout.isatty()


def note(message: str) -> None:
    """An informational line on stderr (rich markup); --quiet drops it."""
    from voicerouter.cli.output import quiet

    if not quiet():
        stderr_console().print(message)


def print_error(exc: VoiceRouterError) -> None:
    from voicerouter.config.secrets import redact

    print(f"error: {printable(redact(str(exc)))}", file=sys.stderr)


def check_writable(path: Path, what: str, *, directory: bool) -> None:
    """A usage error now, before a long run, if `path` (a file, or a directory to create) cannot be written."""
    target = path if directory else path.parent
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the nearest existing ancestor decides whether it can be created
    problem = None
    if directory and path.exists() and not path.is_dir():
        problem = "exists and is not a directory"
    elif not directory and path.is_dir():
        problem = "is a directory"
    elif not probe.is_dir():
        problem = f"{probe} is not a directory"
    elif not os.access(probe, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        problem = "is not writable"
    if problem:
        raise UsageError(f"{what} {path}: {problem}", hint="choose a path you can write to")


def stderr_console() -> Console:
    from voicerouter.cli.output import console

    return console(stderr=True)


def stdout_console() -> Console:
    from voicerouter.cli.output import console

    return console()


def find_routes(option: Path | None) -> Path:
    """--routes, else $VOICEROUTER_ROUTES, else ./routes.yaml."""
    if option is not None:
        return option
    env = os.environ.get(ROUTES_ENV)
    if env:
        return Path(env)
    default = Path(DEFAULT_ROUTES)
    if default.exists():
        return default
    raise UsageError(
        "no routing table found",
        hint=f"pass --routes FILE, set ${ROUTES_ENV}, or create ./{DEFAULT_ROUTES}; routes.example.yaml is a start",
    )


def routes_or_builtin(option: Path | None):  # -> RoutingTable
    """For commands that run sessions: the table `find_routes` finds, else the built-in offline one (with a note)."""
    from voicerouter.config.loader import builtin_routes, load_routes

    try:
        path = find_routes(option)
    except UsageError:
        note(
            "[dim]note: no routing table found (--routes, $VOICEROUTER_ROUTES, ./routes.yaml); "
            "using the built-in offline table (whisper + moonshine → echo agent → piper)[/]"
        )
        return builtin_routes()
    return load_routes(path)


FLAG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def parse_flags(values: list[str] | None) -> dict[str, bool]:
    """`--flag s2s` -> {"s2s": True}; `--flag beta=false` -> {"beta": False}."""
    flags: dict[str, bool] = {}
    for raw in values or []:
        name, sep, value = raw.partition("=")
        name = name.strip()
        if not FLAG_NAME.fullmatch(name):
            head, colon, tail = name.partition(":")
            hint = (f"write --flag {head} or --flag {head}={tail}" if colon and FLAG_NAME.fullmatch(head)
                    else "use --flag NAME or --flag NAME=true|false")
            raise UsageError(f"bad --flag {raw!r}", hint=hint)
        if not sep:
            flags[name] = True
            continue
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            flags[name] = True
        elif lowered in ("0", "false", "no", "off"):
            flags[name] = False
        else:
            raise UsageError(f"bad --flag {raw!r}: value must be true or false", hint=f"write --flag {name}={'true'}")
    return flags


def warn_unused_flags(route_flags: set[str], flags: dict[str, bool], file: str) -> None:
    """A flag no route matches on changes nothing: say so (often a typo). `route_flags`: the flags routes use."""
    from voicerouter.suggest import did_you_mean

    for name in flags:
        if name not in route_flags:
            known = did_you_mean(name, route_flags) or (f" (routes use: {', '.join(sorted(route_flags))})" if route_flags else "")
            print(f"warning: flag {name!r} is not used by any route in {file}{known}", file=sys.stderr)
