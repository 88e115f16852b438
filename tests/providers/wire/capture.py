"""A capture server on 127.0.0.1: records exactly what a client sends (HTTP request or WebSocket
handshake plus its first messages) and answers with a canned reply, so an official SDK's request and
voicerouter's can be compared field by field."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

AUTH_HEADERS = ("authorization", "x-api-key", "xi-api-key", "x-goog-api-key", "ocp-apim-subscription-key")


@dataclass
class Captured:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes = b""
    websocket: bool = False
    messages: list[Any] = field(default_factory=list)  # WebSocket: what the client sent (JSON or bytes length)


Responder = Callable[[Captured], web.StreamResponse]
# A WebSocket script gets the record and a `send(json)`; it runs after the upgrade until the client closes.
Script = Callable[[Captured, Callable[[Any], Awaitable[None]]], Awaitable[None]]


@dataclass
class Capture:
    url: str
    records: list[Captured]

    @property
    def ws_url(self) -> str:
        return "ws://" + self.url.removeprefix("http://")


def _default(record: Captured) -> web.StreamResponse:
    return web.json_response({})


async def _nothing(record: Captured, send: Callable[[Any], Awaitable[None]]) -> None:
    return None


@asynccontextmanager
async def capture(respond: Responder = _default, script: Script = _nothing,
                  keep_messages: int = 4) -> AsyncIterator[Capture]:
    """`async with capture(...) as cap:` point a client at `cap.url`, then read `cap.records`."""
    records: list[Captured] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        query: dict[str, list[str]] = {}
        for key, value in request.query.items():
            query.setdefault(key, []).append(value)
        headers = {k.lower(): v for k, v in request.headers.items()}
        record = Captured(request.method, request.path, query, headers)
        if headers.get("upgrade", "").lower() == "websocket":
            records.append(record)
            record.websocket = True
            ws = web.WebSocketResponse(protocols=[p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")
                                                  if p.strip()][:1])
            await ws.prepare(request)

            async def send(event: Any) -> None:
                if isinstance(event, bytes):
                    await ws.send_bytes(event)
                else:
                    await ws.send_str(json.dumps(event))

            runner = asyncio.create_task(script(record, send))
            try:
                async for message in ws:
                    if len(record.messages) >= keep_messages:
                        continue
                    if message.type == WSMsgType.TEXT:
                        try:
                            record.messages.append(json.loads(message.data))
                        except ValueError:
                            record.messages.append(message.data)
                    elif message.type == WSMsgType.BINARY:
                        record.messages.append(len(message.data))
            finally:
                runner.cancel()
            return ws
        record.body = await request.read()
        records.append(record)  # whole, before anyone reads it
        return respond(record)

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Capture(f"http://127.0.0.1:{port}", records)
    finally:
        await runner.cleanup()
