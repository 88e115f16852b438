"""The quick way in for `resolve` and `validate`: their plain options parsed without typer.

Anything this small parser does not know (help, completion, root options, `--to`, `--opt=value`)
returns None and the typer app handles the whole command line, so typer stays the reference for
options and help. The bodies are shared (`cli.cached`); only the argument parsing is here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

RESOLVE_VALUES = {"--tenant": "tenant", "-t": "tenant", "--region": "region", "-r": "region",
                  "--session-id": "session_id", "-s": "session_id", "--routes": "routes"}
VALIDATE_VALUES = {"--format": "format", "-f": "format"}
FORMATS = ("text", "json", "github")


def _parse(args: list[str], values: dict[str, str], flags: dict[str, str], lists: dict[str, str]) -> dict | None:
    out: dict = {"args": []}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in values or arg in lists:
            if i + 1 >= len(args) or args[i + 1].startswith("-"):
                return None
            if arg in values:
                out[values[arg]] = args[i + 1]
            else:
                out.setdefault(lists[arg], []).append(args[i + 1])
            i += 2
        elif arg in flags:
            out[flags[arg]] = True
            i += 1
        elif arg.startswith("-"):
            return None
        else:
            out["args"].append(arg)
            i += 1
    return out


def fast_path(argv: list[str]) -> int | None:
    """The exit code when this path handled the command, else None (nothing printed)."""
    if not argv or argv[0] not in ("resolve", "validate"):
        return None
    from voicerouter.errors import VoiceRouterError

    # Pydantic looks for plugins in every installed distribution's entry points when the schema is
    # first built (tens of milliseconds); these two commands build only the routing table's models.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        if argv[0] == "resolve":
            opts = _parse(argv[1:], RESOLVE_VALUES, {"--json": "json"}, {"--flag": "flag"})
            if opts is None or opts["args"]:
                return None
            from voicerouter.cli.cached import run_resolve

            return run_resolve(Path(opts["routes"]) if "routes" in opts else None, tenant=opts.get("tenant"),
                               region=opts.get("region"), flag=opts.get("flag", []),
                               session_id=opts.get("session_id"), json_out=opts.get("json", False))
        opts = _parse(argv[1:], VALIDATE_VALUES, {"--json": "json", "--strict": "strict"},
                      {"--select": "select", "--ignore": "ignore"})
        if opts is None or not opts["args"] or opts.get("format", "text") not in FORMATS:
            return None
        from voicerouter.cli.cached import run_validate

        fmt = "json" if opts.get("json") else opts.get("format", "text")
        return run_validate([Path(a) for a in opts["args"]], fmt=fmt, strict=opts.get("strict", False),
                            select=opts.get("select", []), ignore=opts.get("ignore", []))
    except VoiceRouterError as exc:
        from voicerouter.cli.common import print_error

        print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        return None  # the typer path runs the command again and reports the problem properly
