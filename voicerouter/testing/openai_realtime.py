"""A wire-compatible emulator of the OpenAI Realtime WebSocket API (GA events; beta names on request).

The "model" transcribes the committed audio and answers "You said: <transcript>", streaming the
reply's transcript and audio deltas in the GA event order. Faults: `error:STATUS` rejects the
upgrade, `slow` delays `session.created`; the others hit the next response: `drop` kills the
connection mid-response, `hang` never starts it, `stall` stops halfway, `malformed` sends a non-JSON frame.

A response requested while the conversation ends with an assistant message (a reply cut off and
resumed on a new connection) continues that message: the model says the rest of its answer after
the words already there (`CONTINUES_CUT_REPLIES`; a real model may also start over).

A reply's item joins the conversation when it starts; one cancelled mid-way stays there, `incomplete`,
with the words whose audio was sent. `conversation.item.truncate` cuts an assistant item's audio at
`audio_end_ms` (an error past its end, or on an item without model audio) and answers
`conversation.item.truncated`; `conversation.item.delete` removes an item. The real service then
drops the item's transcript and its model hears the audio left; this emulator's model reads text,
so the item keeps, as its transcript, the words whose audio ends within `audio_end_ms` (it knows
where each word of the voice it synthesized ends). Each `response.create` is recorded with the
conversation it answers (`context`: role and text per item), so tests can check what the model knew.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from voicerouter.testing.openai import check_auth, fault_error
from voicerouter.testing.server import TONE_S_PER_CHAR, EmulatorState, Fault

BASE_PATH = "/v1"  # clients take base_url = emulator URL + this
RATE = 24000
DELTA_BYTES = RATE * 2 // 20  # 50 ms of audio per output_audio.delta
PACE = 0.25  # 4x real time, so a drop lands mid-response
DEFAULT_MODEL = "gpt-realtime"
STATE_KEY = web.AppKey("state", EmulatorState)
# Seconds between a commit and its input transcription (0: at once; None: never). The vendor sends
# it asynchronously, so tests move it behind `response.done`.
TRANSCRIPTION_DELAY_S: float | None = 0.0
# Whether the "model" goes on after a cut-off assistant message at the end of the conversation
# (False: it answers whole, as a model that ignores the cut may; tests switch it).
CONTINUES_CUT_REPLIES = True

# GA name -> beta name, for clients that send `OpenAI-Beta: realtime=v1`.
BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "conversation.item.added": "conversation.item.created",
}


@dataclass
class Conn:
    """One WebSocket session's state."""

    ws: web.WebSocketResponse
    state: EmulatorState
    beta: bool
    model: str
    session: dict[str, Any]
    pending_fault: Fault | None = None
    buffer: bytearray = field(default_factory=bytearray)
    items: list[dict[str, Any]] = field(default_factory=list)
    last_transcript: str | None = None
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    responding: asyncio.Task | None = None
    transport: asyncio.BaseTransport | None = None
    background: set[asyncio.Task] = field(default_factory=set)
    # assistant items' audio as sent: item id -> (milliseconds, (word, where its audio ends in ms) per word)
    audio: dict[str, tuple[int, list[tuple[str, int]]]] = field(default_factory=dict)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self.ids):06d}"

    async def send(self, type_: str, **fields: Any) -> None:
        name = BETA_NAMES.get(type_, type_) if self.beta else type_
        await self.ws.send_str(json.dumps({"event_id": self.new_id("event"), "type": name, **fields}))

    async def error(self, message: str, *, code: str | None = None, type_: str = "invalid_request_error",
                    event_id: str | None = None, param: str | None = None) -> None:
        await self.send("error", error={"type": type_, "code": code, "message": message, "param": param,
                                        "event_id": event_id})


def default_session(model: str) -> dict[str, Any]:
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_emulated",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": RATE}, "transcription": None,
                      "noise_reduction": None,
                      "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                         "silence_duration_ms": 200, "create_response": True,
                                         "interrupt_response": True}},
            "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": "marin", "speed": 1.0},
        },
    }


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


async def realtime(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fault = state.take_fault()
    if fault is not None and fault.kind == "error":
        return fault_error(fault)  # handshake rejected with an HTTP status
    denied = check_auth(request, state)
    if denied is not None:
        return denied
    ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024, heartbeat=None)
    await ws.prepare(request)
    model = request.query.get("model", DEFAULT_MODEL)
    beta = request.headers.get("OpenAI-Beta", "").startswith("realtime=")
    conn = Conn(ws, state, beta, model, default_session(model), transport=request.transport)
    state.record(path="/v1/realtime", model=model, beta=beta)
    if fault is not None and fault.kind == "slow":
        await asyncio.sleep(fault.seconds)
    else:
        conn.pending_fault = fault
    await conn.send("session.created", session=conn.session)
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                if msg.type == WSMsgType.BINARY:
                    await conn.error("Binary frames are not supported; send JSON text frames.", code="invalid_event")
                continue
            await handle(conn, msg.data)
    finally:
        if conn.responding is not None:
            conn.responding.cancel()
    return ws


async def handle(conn: Conn, text: str) -> None:
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        await conn.error("The server could not parse the JSON of your event.", code="invalid_json")
        return
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        await conn.error("The 'type' field is missing.", code="invalid_event")
        return
    kind, event_id = event["type"], event.get("event_id")
    detail: dict[str, Any] = {"item": event.get("item")} if kind == "conversation.item.create" else (
        {"response": event.get("response")} if kind == "response.create" and "response" in event else {})
    if kind == "response.create":
        detail["context"] = [(item.get("role"), item_text(item)) for item in conn.items]
    elif kind in ("conversation.item.truncate", "conversation.item.delete"):
        detail.update({k: event.get(k) for k in ("item_id", "content_index", "audio_end_ms") if k in event})
    conn.state.record(path="/v1/realtime", event=kind, **detail)
    if kind == "session.update":
        await session_update(conn, event, event_id)
    elif kind == "input_audio_buffer.append":
        try:
            conn.buffer.extend(base64.b64decode(event.get("audio", ""), validate=True))
        except (binascii.Error, TypeError):
            await conn.error("Invalid 'audio': expected base64-encoded audio bytes.", code="invalid_value",
                             event_id=event_id, param="audio")
    elif kind == "input_audio_buffer.clear":
        conn.buffer.clear()
        await conn.send("input_audio_buffer.cleared")
    elif kind == "input_audio_buffer.commit":
        await commit(conn, event_id)
    elif kind == "conversation.item.create":
        await item_create(conn, event, event_id)
    elif kind == "conversation.item.truncate":
        await item_truncate(conn, event, event_id)
    elif kind == "conversation.item.delete":
        await item_delete(conn, event, event_id)
    elif kind == "response.create":
        if conn.responding is not None and not conn.responding.done():
            await conn.error("Conversation already has an active response in progress.",
                             code="conversation_already_has_active_response", event_id=event_id)
            return
        conn.responding = asyncio.create_task(respond(conn))
    elif kind == "response.cancel":
        if conn.responding is None or conn.responding.done():
            await conn.error("Cancellation failed: no active response found.", code="response_cancel_not_active",
                             event_id=event_id)
            return
        conn.responding.cancel()
    else:
        await conn.error(f"Invalid value: '{kind}'. Not a supported client event type.", code="invalid_value",
                         event_id=event_id, param="type")


async def session_update(conn: Conn, event: dict[str, Any], event_id: str | None) -> None:
    session = event.get("session")
    if not isinstance(session, dict):
        await conn.error("Missing required parameter: 'session'.", code="missing_required_parameter",
                         event_id=event_id, param="session")
        return
    if not conn.beta:
        if session.get("type") not in ("realtime", "transcription"):
            await conn.error("Missing required parameter: 'session.type'.", code="missing_required_parameter",
                             event_id=event_id, param="session.type")
            return
        for direction in ("input", "output"):
            fmt = ((session.get("audio") or {}).get(direction) or {}).get("format")
            if isinstance(fmt, dict) and fmt.get("type") == "audio/pcm" and fmt.get("rate", RATE) != RATE:
                await conn.error(f"Invalid 'session.audio.{direction}.format.rate': only {RATE} is supported.",
                                 code="invalid_value", event_id=event_id,
                                 param=f"session.audio.{direction}.format.rate")
                return
    else:
        # Fold the beta's flat shape into the nested one the emulator keeps.
        if "input_audio_transcription" in session:
            session = merge(session, {"audio": {"input": {"transcription": session["input_audio_transcription"]}}})
        if "voice" in session:
            session = merge(session, {"audio": {"output": {"voice": session["voice"]}}})
    conn.session = merge(conn.session, session)
    await conn.send("session.updated", session=conn.session)


async def item_create(conn: Conn, event: dict[str, Any], event_id: str | None) -> None:
    item = event.get("item")
    if not isinstance(item, dict) or item.get("type") != "message" or item.get("role") not in (
        "user", "assistant", "system"
    ):
        await conn.error("Invalid 'item': expected a message with role user, assistant or system.",
                         code="invalid_value", event_id=event_id, param="item")
        return
    content = item.get("content")
    if not isinstance(content, list) or not content:
        await conn.error("Missing required parameter: 'item.content'.", code="missing_required_parameter",
                         event_id=event_id, param="item.content")
        return
    item = {"id": item.get("id") or conn.new_id("item"), "object": "realtime.item", "status": "completed", **item}
    previous = conn.items[-1]["id"] if conn.items else None
    conn.items.append(item)
    await conn.send("conversation.item.added", previous_item_id=previous, item=item)
    if not conn.beta:
        await conn.send("conversation.item.done", previous_item_id=previous, item=item)


def item_text(item: dict[str, Any]) -> str:
    """What an item says, as the model knows it (text parts and audio transcripts)."""
    return " ".join(str(c.get("text") or c.get("transcript") or "") for c in item.get("content") or []).strip()


def find_item(conn: Conn, item_id: Any) -> dict[str, Any] | None:
    return next((item for item in conn.items if item.get("id") == item_id), None)


async def item_truncate(conn: Conn, event: dict[str, Any], event_id: str | None) -> None:
    item_id, index, end_ms = event.get("item_id"), event.get("content_index"), event.get("audio_end_ms")
    for name, value in (("item_id", item_id), ("content_index", index), ("audio_end_ms", end_ms)):
        if value is None:
            await conn.error(f"Missing required parameter: '{name}'.", code="missing_required_parameter",
                             event_id=event_id, param=name)
            return
    if not isinstance(index, int) or not isinstance(end_ms, int) or isinstance(end_ms, bool) or end_ms < 0:
        await conn.error("Invalid 'content_index' or 'audio_end_ms': expected non-negative integers.",
                         code="invalid_value", event_id=event_id, param="audio_end_ms")
        return
    item = find_item(conn, item_id)
    if item is None:
        await conn.error(f"Item with item_id '{item_id}' not found.", code="invalid_value", event_id=event_id,
                         param="item_id")
        return
    audio = conn.audio.get(str(item_id))
    if item.get("role") != "assistant" or audio is None or index != 0:
        await conn.error("Only model output audio messages can be truncated", code="unsupported_content_type",
                         event_id=event_id, param="item_id")
        return
    duration_ms, words = audio
    if end_ms > duration_ms:
        await conn.error(f"Audio content of {duration_ms}ms is already shorter than {end_ms}ms",
                         code="invalid_value", event_id=event_id, param="audio_end_ms")
        return
    heard = [(word, end) for word, end in words if end <= end_ms]
    conn.audio[str(item_id)] = (end_ms, heard)
    item["content"] = [{"type": "output_audio", "transcript": " ".join(word for word, _ in heard)}]
    await conn.send("conversation.item.truncated", item_id=item_id, content_index=index, audio_end_ms=end_ms)


async def item_delete(conn: Conn, event: dict[str, Any], event_id: str | None) -> None:
    item = find_item(conn, event.get("item_id"))
    if item is None:
        await conn.error(f"Item with item_id '{event.get('item_id')}' not found.", code="invalid_value",
                         event_id=event_id, param="item_id")
        return
    conn.items.remove(item)
    conn.audio.pop(str(item["id"]), None)
    await conn.send("conversation.item.deleted", item_id=item["id"])


def word_spans_ms(text: str, audio_ms: int, engine: str) -> list[tuple[str, int, int]]:
    """Where each word's audio starts and ends in the emulator's voice: `words` says each word in turn
    with a pause after it; the tone (and Piper, approximately) spreads the text evenly over the audio."""
    out: list[tuple[str, int, int]] = []
    if engine == "words":
        t = 0.0
        for word in text.split():
            out.append((word, round(t * 1000), round((t + TONE_S_PER_CHAR * len(word)) * 1000)))
            t += TONE_S_PER_CHAR * (len(word) + 1)
        return out
    end = 0
    for word in text.split():
        start = text.index(word, end)
        end = start + len(word)
        out.append((word, round(audio_ms * start / max(1, len(text))), round(audio_ms * end / max(1, len(text)))))
    return out


def word_ends_ms(text: str, audio_ms: int, engine: str) -> list[tuple[str, int]]:
    return [(word, end) for word, _, end in word_spans_ms(text, audio_ms, engine)]


async def commit(conn: Conn, event_id: str | None) -> None:
    if len(conn.buffer) < RATE * 2 // 10:
        await conn.error(
            f"Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but buffer "
            f"only has {len(conn.buffer) / 2 / RATE * 1000:.2f}ms of audio.",
            code="input_audio_buffer_commit_empty", event_id=event_id,
        )
        return
    pcm = bytes(conn.buffer)
    conn.buffer.clear()
    conn.state.requests[-1]["audio_s"] = len(pcm) / 2 / RATE  # what was heard, for assertions
    item_id = conn.new_id("item")
    previous = conn.items[-1]["id"] if conn.items else None
    item = {"id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}]}
    conn.items.append(item)
    await conn.send("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
    await conn.send("conversation.item.added", previous_item_id=previous, item=item)
    transcript = await conn.state.transcribe(pcm, RATE)
    conn.last_transcript = transcript
    item["content"][0]["transcript"] = transcript
    if not conn.beta:
        await conn.send("conversation.item.done", previous_item_id=previous, item=item)
    if (conn.session.get("audio") or {}).get("input", {}).get("transcription"):
        completed = {"item_id": item_id, "content_index": 0, "transcript": transcript,
                     "usage": {"type": "duration", "seconds": round(len(pcm) / 2 / RATE)}}
        if TRANSCRIPTION_DELAY_S is None:
            return  # the transcription never comes
        if TRANSCRIPTION_DELAY_S > 0:  # asynchronous, as the vendor says: it may land after response.done
            task = asyncio.create_task(_later(conn, TRANSCRIPTION_DELAY_S, completed))
            conn.background.add(task)
            task.add_done_callback(conn.background.discard)
            return
        await conn.send("conversation.item.input_audio_transcription.completed", **completed)


async def _later(conn: Conn, delay_s: float, completed: dict[str, Any]) -> None:
    await asyncio.sleep(delay_s)
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        if not conn.ws.closed:
            await conn.send("conversation.item.input_audio_transcription.completed", **completed)


def reply_for(conn: Conn) -> str:
    answer = _answer(conn)
    last = conn.items[-1] if conn.items else None
    if CONTINUES_CUT_REPLIES and last is not None and last.get("role") == "assistant":
        said = " ".join(c.get("text") or c.get("transcript") or "" for c in last.get("content", [])).split()
        words = answer.split()
        if said and [w.lower() for w in words[: len(said)]] == [w.lower() for w in said] and len(words) > len(said):
            return " ".join(words[len(said):])  # the rest of the cut-off reply
    return answer


def _answer(conn: Conn) -> str:
    if conn.last_transcript is not None:
        return f"You said: {conn.last_transcript}"
    for item in reversed(conn.items):
        if item.get("role") == "user":
            texts = [c.get("text") or c.get("transcript") or "" for c in item.get("content", [])]
            return f"You said: {' '.join(t for t in texts if t)}"
    return "Hello."


async def respond(conn: Conn) -> None:
    """One response; `response.cancel` ends it with a `cancelled` response.done, like the vendor."""
    response_id = conn.new_id("resp")
    try:
        await stream_response(conn, response_id)
    except ConnectionResetError:
        return  # the client went away mid-response
    except asyncio.CancelledError:
        if not conn.ws.closed:
            with contextlib.suppress(Exception):
                await conn.send("response.done", response={
                    "id": response_id, "object": "realtime.response", "status": "cancelled",
                    "status_details": {"type": "cancelled", "reason": "client_cancelled"}, "output": []})
        raise


async def stream_response(conn: Conn, response_id: str) -> None:
    """The GA order: created, item/part added, interleaved deltas, done events."""
    fault, conn.pending_fault = conn.pending_fault, None
    if fault is None:
        fault = conn.state.take_fault()
    state, ws = conn.state, conn.ws
    item_id = conn.new_id("item")
    voice = conn.session["audio"]["output"].get("voice", "marin")
    await conn.send("response.created", response={"id": response_id, "object": "realtime.response",
                                                  "status": "in_progress", "output": []})
    if fault is not None and fault.kind == "error":
        code = "rate_limit_exceeded" if fault.status == 429 else "server_error"
        failure = {"type": "failed", "error": {"type": "server_error" if fault.status >= 500 else "invalid_request_error",
                                               "code": code}}
        await conn.send("response.done", response={"id": response_id, "object": "realtime.response",
                                                   "status": "failed", "status_details": failure, "output": []})
        return
    if fault is not None and fault.kind == "malformed":
        await ws.send_str("<html>502 Bad Gateway</html>")
        return
    if fault is not None and fault.kind == "hang":
        await asyncio.sleep(fault.seconds if fault.arg else 3600.0)
    await conn.send("rate_limits.updated", rate_limits=[
        {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 0.06}])
    text = reply_for(conn)
    item = {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant",
            "status": "in_progress", "content": []}
    await conn.send("response.output_item.added", response_id=response_id, output_index=0, item=item)
    await conn.send("conversation.item.added", previous_item_id=conn.items[-1]["id"] if conn.items else None,
                    item=item)
    # In the conversation from now on: a cancelled reply stays, incomplete, with what was sent of it.
    live = {**item, "status": "incomplete", "content": [{"type": "output_audio", "transcript": ""}]}
    conn.items.append(live)
    part = {"type": "output_audio", "transcript": ""}
    common = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
    await conn.send("response.content_part.added", part=part, **common)
    pcm = await state.synthesize(text, RATE)
    spans = word_spans_ms(text, round(len(pcm) / 2 / RATE * 1000), state.tts_engine)
    ends = [(word, end) for word, _, end in spans]
    words = text.split(" ")
    told = 0  # words whose transcript delta went out
    chunks = [pcm[i : i + DELTA_BYTES] for i in range(0, len(pcm), DELTA_BYTES)] or [b""]
    started, stalled, sent_ms = time.monotonic(), False, 0
    for index, chunk in enumerate(chunks):
        if fault is not None and fault.kind == "drop" and (
            index >= len(chunks) // 2 or (fault.arg and time.monotonic() - started >= fault.seconds)
        ):
            if conn.transport is not None:
                conn.transport.abort()  # a crash, not a close handshake: the client sees 1006
            else:
                await ws.close(code=1011, message=b"emulated drop")
            return
        if fault is not None and fault.kind == "stall" and not stalled and index >= len(chunks) // 2:
            stalled = True
            await asyncio.sleep(fault.seconds if fault.arg else 3600.0)
        # The model's transcript comes with its audio: each word's delta just before the audio delta
        # in which the word starts (text and audio interleave like the real thing).
        chunk_end_ms = (index + 1) * DELTA_BYTES * 1000 // (2 * RATE)
        upto = told
        while upto < len(spans) and (spans[upto][1] < chunk_end_ms or index == len(chunks) - 1):
            upto += 1
        if upto > told:
            delta = " ".join(word for word, _, _ in spans[told:upto])
            await conn.send("response.output_audio_transcript.delta", delta=delta if told == 0 else " " + delta,
                            **common)
            told = upto
        if chunk:
            await conn.send("response.output_audio.delta", delta=base64.b64encode(chunk).decode(), **common)
            sent_ms += round(len(chunk) / 2 / RATE * 1000)
            sent = [(word, min(end, sent_ms)) for word, end in ends if end <= sent_ms]
            conn.audio[item_id] = (sent_ms, sent)
            live["content"] = [{"type": "output_audio", "transcript": " ".join(word for word, _ in sent)}]
        await asyncio.sleep(len(chunk) / 2 / RATE * PACE)
    await conn.send("response.output_audio.done", **common)
    await conn.send("response.output_audio_transcript.done", transcript=text, **common)
    part["transcript"] = text
    await conn.send("response.content_part.done", part=part, **common)
    item = {**item, "status": "completed", "content": [{"type": "output_audio", "transcript": text}]}
    conn.audio[item_id] = (sent_ms, ends)
    if live in conn.items:
        conn.items[conn.items.index(live)] = item
    await conn.send("response.output_item.done", response_id=response_id, output_index=0, item=item)
    await conn.send("response.done", response={
        "id": response_id, "object": "realtime.response", "status": "completed", "status_details": None,
        "output": [item], "audio": {"output": {"voice": voice}},
        "usage": {"total_tokens": len(words) * 2, "input_tokens": len(words), "output_tokens": len(words)},
    })


def build_app(state: EmulatorState) -> web.Application:
    """The emulator app: `ws://HOST:PORT/v1/realtime?model=...` (see `voicerouter.testing.server.emulate`)."""
    from voicerouter.testing.openai import not_found, quiet_disconnects

    app = web.Application(middlewares=[quiet_disconnects])
    app[STATE_KEY] = state
    app.router.add_get("/v1/realtime", realtime)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
