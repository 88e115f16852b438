"""An AssemblyAI Universal Streaming (v3) emulator: `GET /v3/ws` WebSocket.

Auth: `Authorization: KEY` (raw key) or `?token=`; a wrong key is closed with 1008 right after the
upgrade. Query: `sample_rate` (required), `encoding` (`pcm_s16le` or `pcm_mulaw`), `speech_model`.
The server says `Begin`, takes binary frames of 50-1000 ms (others: close 3007), and refuses audio
more than one second ahead of real time (3007; the documents state the rule without a tolerance).
Partial `Turn`s follow every half second of audio; `ForceEndpoint` ends the turn (`end_of_turn`,
then a formatted repeat when `format_turns=true`); `Terminate` ends any open turn, then sends
`Termination` and closes 1000. Turns end only on request: the emulator does no endpointing.

Faults: `error:STATUS` refuses the upgrade with that HTTP status; `drop[:Ns]` cuts the connection
after that much audio (half a second by default); `stall` stops answering; `hang` never says
`Begin`; `malformed` sends a non-JSON frame instead of the first Turn.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from voicerouter.testing import codecs
from voicerouter.testing.server import EmulatorState, Fault, abort_transport, hold_forever

STATE = web.AppKey("state", EmulatorState)
PARTIAL_EVERY_S = 0.5
LEAD_S = 1.0
MODELS = ("universal-streaming-english", "universal-streaming-multilingual", "whisper-rt", "u3-rt-pro")


def build_app(state: EmulatorState) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/v3/ws", _streaming)
    return app


async def _streaming(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    messages: list[Any] = []
    state.record(path=request.path, method="GET", websocket=True, query=dict(request.query),
                 headers=dict(request.headers), messages=messages)
    fault = state.take_fault()
    if fault is not None and fault.kind == "error":
        return web.json_response({"error": "Request failed."}, status=fault.status)
    query = request.query
    ws = web.WebSocketResponse(heartbeat=None)
    await ws.prepare(request)
    key = request.headers.get("Authorization") or query.get("token")
    if key != state.api_key:
        await ws.close(code=1008, message=b"Unauthorized connection: invalid API key")
        return ws
    try:
        rate = int(query.get("sample_rate", ""))
        if rate <= 0:
            raise ValueError
    except ValueError:
        await ws.close(code=3006, message=b"Invalid sample_rate: must be a positive integer")
        return ws
    encoding = query.get("encoding", "pcm_s16le")
    if encoding not in ("pcm_s16le", "pcm_mulaw") or query.get("speech_model", MODELS[0]) not in MODELS:
        await ws.close(code=3006, message=b"Invalid encoding or speech_model")
        return ws
    session = _Session(state, ws, messages, rate, encoding, fault, abort_transport(request),
                       formatted=query.get("format_turns", "false").lower() == "true")
    try:
        await session.serve()
    except ConnectionResetError:
        pass
    return ws


class _Session:
    def __init__(self, state: EmulatorState, ws: web.WebSocketResponse, messages: list[Any], rate: int,
                 encoding: str, fault: Fault | None, abort: Any, *, formatted: bool) -> None:
        self.state, self.ws, self.messages, self.rate, self.encoding = state, ws, messages, rate, encoding
        self.fault, self.abort, self.formatted = fault, abort, formatted
        self.turn = bytearray()  # PCM16 of the open turn
        self.turn_order = 0
        self.total_s = 0.0
        self.next_partial = PARTIAL_EVERY_S
        self.began = 0.0

    async def send(self, message: dict[str, Any]) -> None:
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(message))

    async def serve(self) -> None:
        kind = self.fault.kind if self.fault else None
        if kind == "hang":
            await hold_forever()
        if kind == "slow":
            await asyncio.sleep(self.fault.seconds)  # type: ignore[union-attr]
        self.began = time.monotonic()
        await self.send({"type": "Begin", "id": str(uuid.uuid4()), "expires_at": int(time.time()) + 3 * 3600})
        async for message in self.ws:
            if message.type == WSMsgType.BINARY:
                self.messages.append(len(message.data))
                if not await self.audio(message.data):
                    return
            elif message.type == WSMsgType.TEXT:
                try:
                    event = json.loads(message.data)
                    kind_ = event.get("type")
                except (ValueError, AttributeError):
                    await self.ws.close(code=3006, message=b"Invalid JSON")
                    return
                self.messages.append(event)
                if kind_ == "ForceEndpoint":
                    await self.end_turn()
                elif kind_ == "Terminate":
                    await self.end_turn()
                    await self.send({"type": "Termination", "audio_duration_seconds": round(self.total_s),
                                     "session_duration_seconds": round(time.monotonic() - self.began)})
                    await self.ws.close(code=1000)
                    return
                elif kind_ not in ("KeepAlive", "UpdateConfiguration"):
                    await self.ws.close(code=3006, message=f"Invalid message type: {kind_}".encode())
                    return

    async def audio(self, data: bytes) -> bool:
        width = 1 if self.encoding == "pcm_mulaw" else 2
        seconds = len(data) / width / self.rate
        if not 0.05 - 1e-6 <= seconds <= 1.0 + 1e-6:
            await self.ws.close(code=3007, message=f"Input duration violation: {seconds * 1000:.0f} ms, "
                                                   "expected between 50 and 1000 ms".encode())
            return False
        self.total_s += seconds
        if self.total_s > time.monotonic() - self.began + LEAD_S:
            await self.ws.close(code=3007, message=b"Audio sent faster than real time")
            return False
        kind = self.fault.kind if self.fault else None
        cut = self.fault.seconds or 0.5 if self.fault is not None and kind == "drop" else None
        if cut is not None and self.total_s >= cut:
            self.abort()
            return False
        if kind == "stall":
            await hold_forever()
        pcm = codecs.decode_raw(data, "pcm_mulaw", self.rate) if width == 1 else data
        self.turn += pcm
        turn_s = len(self.turn) / 2 / self.rate
        if turn_s >= self.next_partial:
            self.next_partial += PARTIAL_EVERY_S
            if kind == "malformed":
                await self.ws.send_str("<html>502 Bad Gateway</html>")
                return True
            words = (await self.state.transcribe(bytes(self.turn), self.rate)).split()
            shown = words[: max(1, len(words) * int(turn_s / PARTIAL_EVERY_S) // 4)]  # grows as audio comes
            await self.send(self.turn_message(" ".join(shown), end=False))
        return True

    def turn_message(self, text: str, *, end: bool, formatted: bool = False) -> dict[str, Any]:
        words = text.split()
        step = max(1, int(len(self.turn) / 2 / self.rate * 1000) // max(1, len(words)))
        return {
            "type": "Turn", "turn_order": self.turn_order, "turn_is_formatted": formatted, "end_of_turn": end,
            "transcript": text, "end_of_turn_confidence": 0.9 if end else 0.05, "utterance": text if end else "",
            "words": [{"text": w, "start": i * step, "end": (i + 1) * step, "confidence": 0.9, "word_is_final": end}
                      for i, w in enumerate(words)],
        }

    async def end_turn(self) -> None:
        if not self.turn:
            return
        text = await self.state.transcribe(bytes(self.turn), self.rate)
        await self.send(self.turn_message(text.lower().strip(".?!"), end=True))
        if self.formatted:
            await self.send(self.turn_message(text, end=True, formatted=True))
        self.turn.clear()
        self.turn_order += 1
        self.next_partial = PARTIAL_EVERY_S
