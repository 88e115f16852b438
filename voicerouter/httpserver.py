"""The one HTTP/WebSocket server stack of voicerouter: aiohttp, for `serve` and the emulators alike.

aiohttp serves HTTP and WebSockets from one application on one port, with streaming responses and
abortable connections (what the emulators' faults need) and per-connection tasks (what a media
stream needs); it was already a dependency. One helper starts an application on a host and port
(0 = a free one) and reports the port it got, so tests never need fixed ports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web


@web.middleware
async def peer_gone(request: web.Request, handler: Any) -> web.StreamResponse:
    """A client that goes away mid-request (a cancelled TTS request, a hung-up caller) is routine for
    a voice server, not an error worth a traceback: the request ends quietly."""
    try:
        return await handler(request)
    except ConnectionResetError:
        return web.Response(status=499, text="client closed the connection\n")  # nobody reads it


@dataclass
class RunningServer:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def aclose(self) -> None:
        await self.runner.cleanup()


async def start_server(
    app: web.Application, host: str = "127.0.0.1", port: int = 0, *, shutdown_timeout: float = 0.5
) -> RunningServer:
    """Serve `app` on host:port until `aclose()`; signals stay with the caller (no handle_signals)."""
    if peer_gone not in app.middlewares:
        app.middlewares.append(peer_gone)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    sockets = site._server.sockets if site._server is not None else ()  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[1] if sockets else port
    return RunningServer(runner, host, bound)
