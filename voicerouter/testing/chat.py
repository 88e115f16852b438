"""Loopback servers for the agents: an OpenAI chat-completions emulator and a generic webhook.

`emulate("openai-chat")` serves `POST /v1/chat/completions` (also without the /v1 prefix) with
OpenAI's Bearer auth, validation and error envelope, and with `stream: true` the reply as
server-sent `chat.completion.chunk` events, one word per event, ending `data: [DONE]`; `emulate("webhook")` answers any POST with
`{"reply": ...}`. Both reply "You said: <last user text>", or `state.reply` when a test sets it,
record each request (body and headers) in `state.requests`, and honour the emulator faults.

Continuing a cut reply: a chat request whose last message is the assistant's unfinished reply is
answered with the rest of the reply when it asks to continue that message (`"prefix": true` on it,
as DeepSeek and Mistral take it, or `continue_final_message: true`, as vLLM does); without either
(all OpenAI's own API offers) the model starts its reply over, so the client has to drop what it
repeats. The webhook answers a request with `partial_reply` with the rest of its reply.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from voicerouter.testing.openai import error_response, fault_then_auth, send_body
from voicerouter.testing.server import EmulatorState, Fault, drop_connection

STATE_KEY = web.AppKey("state", EmulatorState)
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def configured_reply(state: EmulatorState, heard: str) -> str:
    """`state.reply` if a test set one (an attribute added on the fly), else an echo of what was heard."""
    reply = getattr(state, "reply", None)
    return reply if isinstance(reply, str) else f"You said: {heard}"


def build_app(state: EmulatorState) -> web.Application:
    app = web.Application()
    app[STATE_KEY] = state
    if state.provider_type == "webhook":
        app.router.add_post("/{path:.*}", webhook)
    else:
        app.router.add_post("/v1/chat/completions", chat_completions)
        app.router.add_post("/chat/completions", chat_completions)
    return app


def rest_of(reply: str, partial: str) -> str:
    """What follows `partial` in `reply` (a model continuing its own unfinished message), or the whole
    reply when it does not start with it."""
    words, said = reply.split(" "), partial.split()
    if said and [w for w in words[: len(said)]] == said:
        rest = " ".join(words[len(said):])
        return " " + rest if rest else ""
    return reply


def _text_of(content: Any) -> str | None:
    """Message content as text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts):
            return " ".join(parts)  # type: ignore[arg-type]
    return None


async def _json_or_none(request: web.Request) -> Any:
    """The request's JSON body, or None when it is not JSON (the handler answers that in its own words)."""
    try:
        return await request.json()
    except ValueError:
        return None


def _validate(body: Any) -> str | None:
    """What is wrong with a chat-completions request body, in OpenAI's words, or None."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "[] is too short - 'messages'" if messages == [] else "Missing required parameter: 'messages'."
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"Invalid value for 'messages[{index}].role'."
        if _text_of(message.get("content")) is None:
            return f"Invalid type for 'messages[{index}].content': expected a string or an array of text parts."
    if "stream" in body and not isinstance(body["stream"], bool):
        return "Invalid type for 'stream': expected a boolean."
    return None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fault, early = await fault_then_auth(request, state)
    if early is not None:
        return early
    body = await _json_or_none(request)
    problem = _validate(body)
    state.record(path=request.path, body=body, headers=dict(request.headers))
    if problem is not None:
        return error_response(400, problem, param="messages" if "messages" in problem else None)
    users = [_text_of(m["content"]) for m in body["messages"] if m["role"] == "user"]
    reply = configured_reply(state, users[-1] if users else "")
    last = body["messages"][-1]
    if last["role"] == "assistant" and (last.get("prefix") is True or body.get("continue_final_message") is True):
        reply = rest_of(reply, _text_of(last["content"]) or "")
    if body.get("stream"):
        return await _stream_events(request, body["model"], reply, len(state.requests), fault)
    answer = {
        "id": f"chatcmpl-emu{len(state.requests)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": sum(len(str(m["content"]).split()) for m in body["messages"]),
                  "completion_tokens": len(reply.split()), "total_tokens": 0},
    }
    answer["usage"]["total_tokens"] = answer["usage"]["prompt_tokens"] + answer["usage"]["completion_tokens"]
    return await send_body(request, json.dumps(answer).encode(), "application/json", fault)


EVENT_GAP_S = 0.01  # between streamed words: a fast model's pace


async def _stream_events(request: web.Request, model: str, reply: str, number: int,
                         fault: Fault | None) -> web.StreamResponse:
    """The reply as `chat.completion.chunk` server-sent events; stall/drop/truncate/malformed strike
    after half of the words (a model that dies mid-reply)."""
    base = {"id": f"chatcmpl-emu{number}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model}

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return f"data: {json.dumps(chunk)}\n\n".encode()

    words = reply.split(" ")
    events = [event({"role": "assistant", "content": ""})]
    events += [event({"content": word if i == 0 else " " + word}) for i, word in enumerate(words)]
    events += [event({}, "stop"), b"data: [DONE]\n\n"]
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream; charset=utf-8",
                                                       "Cache-Control": "no-cache"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    kind = fault.kind if fault else None
    strike = 1 + max(1, len(words) // 2)  # after the role event and half of the words
    for index, data in enumerate(events):
        if index == strike and kind in ("stall", "drop", "truncate", "malformed"):
            if kind == "stall":
                await asyncio.sleep(fault.seconds if fault.arg else 3600.0)  # type: ignore[union-attr]
            elif kind == "malformed":
                await response.write(b"data: {not json\n\n")
            else:
                drop_connection(request)
                return response
        await response.write(data)
        await asyncio.sleep(EVENT_GAP_S)
    await response.write_eof()
    return response


async def webhook(request: web.Request) -> web.StreamResponse:
    """Any POST: expects the webhook agent's JSON, answers {"reply": ...}; no auth of its own."""
    state = request.app[STATE_KEY]
    fault, early = await fault_then_auth(request, state, auth=False)
    if early is not None:
        return early
    body = await _json_or_none(request)
    state.record(path=request.path, body=body, headers=dict(request.headers))
    if not isinstance(body, dict) or not isinstance(body.get("transcript"), str):
        return web.json_response({"error": "expected a JSON object with a string transcript"}, status=400)
    reply = configured_reply(state, body["transcript"])
    if isinstance(body.get("partial_reply"), str):
        reply = rest_of(reply, body["partial_reply"]).strip()
    return await send_body(request, json.dumps({"reply": reply}).encode(), "application/json", fault)
