"""`voicerouter serve`: real calls (phone via Twilio and Telnyx media streams, apps and browsers
via WebSocket) reach sessions of the routing table, with capacity, health, metrics and drain.

    transports (twilio | telnyx | websocket)  ->  CallSource / CallSink  ->  Session core
                 \\- webhooks decide admission through resilience.capacity (one place)
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any

from voicerouter.errors import EXIT_INTERRUPTED, EXIT_OK, UsageError
from voicerouter.serve.calls import CallManager, ServeOptions
from voicerouter.shutdown import exit_process

__all__ = ["CallManager", "ServeOptions", "run_server"]

YOUNG_GC_THRESHOLD = 20_000  # allocations between young collections (CPython's default is 700)


async def run_server(
    table: Any,
    options: ServeOptions,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    extra_routes: Iterable[Any] = (),
    say: Callable[[str], None] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT, then drain; a second signal exits at once. Returns the exit code."""
    from voicerouter import fleet

    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    manager = CallManager(table, options)
    await manager.prepare()
    for name, problem in manager.broken_providers.items():
        say(f"warning: provider {name} cannot be built: {problem}")
    try:
        async with fleet.shared_state(table.config.state, manager.env, options.state_url,
                                      describe=manager.describe) as shared:
            if shared is not None:
                info = shared.status()
                say(f"shared state: node {info['node']} " + ("on Redis" if info["connected"] else
                    f"(Redis unreachable: using local limits until it is back: {info['last_error']})"))
            return await _serve(manager, options, host, port, extra_routes, say)
    finally:
        await manager.aclose()


async def _serve(manager: CallManager, options: ServeOptions, host: str, port: int,
                 extra_routes: Iterable[Any], say: Callable[[str], None]) -> int:
    from voicerouter.httpserver import start_server
    from voicerouter.serve.app import build_app

    app = build_app(manager, extra_routes=extra_routes)
    try:
        server = await start_server(app, host, port, shutdown_timeout=1.0)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         hint="choose another --port, or stop what is using it") from None
    manager.url = server.url
    # What start-up built (modules, the routing table, providers) lives as long as the process: keep
    # it out of the garbage collector's full passes, which otherwise stop every call's audio for tens
    # of milliseconds at a time as they walk it. A full pass still walks every live call's objects
    # (some 40 ms with a hundred calls on a busy machine): young collections every 20000 allocations
    # instead of 700 make full ones rarer in proportion, for young passes of about a millisecond.
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            stop.set()
            return
        say("second signal: exiting now")
        exit_process(EXIT_INTERRUPTED, at_once=True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    ready, why = manager.ready()
    from voicerouter.serve.app import AUTH

    say(f"listening on {server.url} ({'ready' if ready else 'not ready: ' + why}; "
        f"max sessions {options.max_sessions or 'unlimited'}; "
        f"/v1/sessions {'needs a bearer token' if app[AUTH].enabled else 'open (no auth)'})")
    try:
        await stop.wait()
        live = len(manager.live)
        say(f"draining: {live} live call(s), up to {options.drain_timeout_s:g} s")
        ended = await manager.drain()
        say(f"stopped ({ended} call(s) ended at the drain timeout)" if ended else "stopped")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.aclose()
    return EXIT_OK
