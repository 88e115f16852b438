"""The generic WebSocket protocol for apps and the browser page: `WS /v1/sessions`.

Connect to `/v1/sessions?tenant=T&region=R&flag=NAME[=true|false]&rate=HZ&session_id=S` (all
optional; `rate` is the sample rate of the audio you send, default 16000). Then:

client -> server
  binary frames             your microphone: PCM16 little-endian mono at `rate`, any length
  {"type": "mark", "name"}  echo a mark once the audio before it has been played
  {"type": "dtmf", "digit"} a key pressed on a keypad (0-9, *, #, A-D): as a phone call's DTMF
  {"type": "stop"}          hang up (closing the socket does the same)
server -> client
  {"type": "session", ...}  first message: session_id, route, matched, pipeline, providers, output_rate
  binary frames             the reply: PCM16 little-endian mono at `output_rate` (16000), whole
                            20 ms frames, up to 1 s per message
  {"type": "mark", "name"}  follows reply audio; echo it when played (this is how the server knows
                            what the user really heard; without echoes it assumes real-time playback)
  {"type": "clear"}         barge-in: drop every reply frame not yet played
  {"type": "event", "event": {...}}  the session's events, as in the JSONL log (transcripts, replies,
                            turn ends, failovers, ...)
The server closes the socket with 1000 when the session ends, 1013 when it is over capacity or
draining (try again later), 1011 on a server-side failure.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from voicerouter.providers.base import PIPELINE_RATE
from voicerouter.transports.base import Audio, Digit, Inbound, MarkEcho, Started, Stopped, WireMessage

if TYPE_CHECKING:
    from voicerouter.routing.plan import SessionPlan
    from voicerouter.session.events import EventBus

OUTPUT_RATE = PIPELINE_RATE
MAX_RATE = 192000


class AppSocket:
    name = "websocket"
    wire_rate = OUTPUT_RATE

    def __init__(self) -> None:
        self.input_rate = PIPELINE_RATE

    def start_from_query(self, query: Any) -> Started:
        """The call's start, from the URL: routing context, session id and input rate."""
        rate_text = query.get("rate") or str(PIPELINE_RATE)
        if not rate_text.isdigit() or not 8000 <= int(rate_text) <= MAX_RATE:
            raise ValueError(f"rate must be a sample rate between 8000 and {MAX_RATE} Hz, got {rate_text!r}")
        self.input_rate = int(rate_text)
        flags = query.getall("flag", []) if hasattr(query, "getall") else ([query["flag"]] if "flag" in query else [])
        params = {k: query[k] for k in ("tenant", "region", "to") if query.get(k)}
        if flags:
            params["flags"] = ",".join(flags)
        session_id = query.get("session_id") or f"ws-{uuid.uuid4().hex[:16]}"
        return Started(session_id, session_id, params, self.input_rate)

    def attach(self, plan: SessionPlan, bus: EventBus, send: Callable[[WireMessage], None]) -> None:
        """Tell the client its session (route, providers) and stream the session's events to it."""
        send(json.dumps({
            "type": "session", "session_id": plan.session_id, "route": plan.route, "matched": plan.matched,
            "pipeline": plan.pipeline, "tenant": plan.context.tenant, "region": plan.context.region,
            "providers": {s.stage: list(s.providers) for s in plan.stages()}, "output_rate": OUTPUT_RATE,
        }))
        bus.subscribe(lambda event: send('{"type": "event", "event": ' + event.to_json() + "}"))

    def decode(self, message: WireMessage) -> list[Inbound]:
        if isinstance(message, bytes):
            return [Audio(message[: len(message) - len(message) % 2], self.input_rate)]
        data: Mapping[str, Any] = json.loads(message)
        kind = data.get("type")
        if kind == "mark":
            return [MarkEcho(str(data.get("name", "")))]
        if kind == "dtmf":
            return [Digit(str(data.get("digit", "")))]
        if kind == "stop":
            return [Stopped("hangup")]
        return []

    def encode_audio(self, pcm: bytes) -> WireMessage:
        return pcm

    def encode_mark(self, name: str) -> WireMessage:
        return json.dumps({"type": "mark", "name": name})

    def encode_clear(self) -> WireMessage:
        return json.dumps({"type": "clear"})


class AppClient:
    """The client's half of the protocol, for `voicerouter load` and tests."""

    name = "websocket"
    rate = PIPELINE_RATE

    def opening(self, parameters: Mapping[str, str]) -> list[str]:
        return []

    def media(self, pcm: bytes) -> bytes:
        return pcm

    @staticmethod
    def payload(pcm: bytes) -> bytes:
        return pcm

    def media_payload(self, payload: bytes, samples: int) -> bytes:
        return payload

    def mark(self, name: str) -> str:
        return json.dumps({"type": "mark", "name": name})

    def dtmf(self, digit: str) -> str:
        return json.dumps({"type": "dtmf", "digit": digit})

    def stop(self) -> str:
        return json.dumps({"type": "stop"})

    def reply(self, message: WireMessage) -> tuple[str, Any]:
        if isinstance(message, bytes):
            return "media", message
        data = json.loads(message)
        kind = str(data.get("type"))
        if kind == "mark":
            return "mark", str(data.get("name", ""))
        if kind == "event":
            return "event", data.get("event") or {}
        return kind, data
