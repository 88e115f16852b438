"""`voicerouter serve`: answer phone calls (Twilio, Telnyx) and app/browser sessions on the routed pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def serve(
    routes: Annotated[Path | None, typer.Option("--routes", help="Routing table (default: $VOICEROUTER_ROUTES, then ./routes.yaml).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; loopback unless you say otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to bind (0: any free port).")] = 8080,
    public_url: Annotated[str | None, typer.Option("--public-url", help="The https URL carriers reach this server at (for signatures and media URLs), e.g. https://voice.example.com.")] = None,
    max_sessions: Annotated[int | None, typer.Option("--max-sessions", help="Most concurrent sessions in this process; more calls are declined (busy).")] = None,
    drain_timeout: Annotated[float, typer.Option("--drain-timeout", help="On SIGTERM, seconds live calls may take to finish before they are ended.")] = 30.0,
    out: Annotated[Path | None, typer.Option("--out", help="Write each session's event log here (<call id>.events.jsonl, for `voicerouter report`).")] = None,
    state: Annotated[str | None, typer.Option("--state", metavar="URL", help="Share limits, breakers and health with a fleet through Redis, e.g. redis://127.0.0.1:6379/0 (overrides the table's state:).")] = None,
    allow_unsigned: Annotated[bool, typer.Option("--allow-unsigned", help="Accept carrier webhooks without a signature check when no auth token/public key is configured (testing only).")] = False,
) -> None:
    """Serve calls: carrier webhooks and media streams, the /v1/sessions WebSocket and a browser page at /."""
    import asyncio

    from voicerouter.cli.common import find_routes
    from voicerouter.config.loader import load_routes
    from voicerouter.errors import UsageError
    from voicerouter.serve import ServeOptions, run_server

    if max_sessions is not None and max_sessions < 1:
        raise UsageError(f"--max-sessions must be at least 1, got {max_sessions}")
    if drain_timeout < 0:
        raise UsageError(f"--drain-timeout must not be negative, got {drain_timeout:g}")
    if public_url is not None and not public_url.startswith(("https://", "http://")):
        raise UsageError(f"--public-url must be an http(s) URL, got {public_url!r}")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {port}")
    table = load_routes(find_routes(routes))
    options = ServeOptions(max_sessions=max_sessions, drain_timeout_s=drain_timeout, public_url=public_url,
                           out_dir=out, allow_unsigned=allow_unsigned, state_url=state)
    code = asyncio.run(run_server(table, options, host, port))
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
