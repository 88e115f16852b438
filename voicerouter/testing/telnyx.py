"""A Telnyx API v2 emulator: Call Control dial, TeXML calls and messages, with real calls behind them.

Routes (under `BASE_PATH` /v2): `POST /calls` (dial; `command_id` makes a repeated dial return the
same call), `GET /calls/{call_control_id}`, `POST /texml/calls/{connection_id}`, `POST /messages`,
`GET /messages/{id}`, `GET /balance`. Bearer auth with the emulator's key; errors as
`{"errors": [{"code": "10009", "title", "detail"}]}`. A dial with `stream_url` connects a media
stream to it and speaks the callee WAV; a TeXML call fetches its `Url` (or takes `Texml`) and
follows `<Connect><Stream>`. The document fetch and the webhooks (`webhook_url`, `StatusCallback`: the
call's and message's events, JSON) are signed like Telnyx's (`telnyx-signature-ed25519` over
`timestamp|body`) with a key made at start-up; `public_key(app)` is what a `serve` verifies them with.

Faults: `error:STATUS` answers with Telnyx's code for that status; `error:CODE` (e.g. `error:10011`,
`error:40300`) with that code's HTTP status. Other faults strike after the call or message was
created (a lost answer), like the Twilio emulator.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from aiohttp import web

from voicerouter.testing.carrier_common import CarrierCalls, StatusSender, be_callee, fetch_document, follow
from voicerouter.testing.server import EmulatorState, Fault, send_body

BASE_PATH = "/v2"
STATE = web.AppKey("state", EmulatorState)
CALLS = web.AppKey("calls", CarrierCalls)
COMMANDS = web.AppKey("commands", dict)
KEY = web.AppKey("key", object)  # the Ed25519 private key the emulator signs webhooks with
E164 = re.compile(r"^\+[1-9]\d{1,14}$")

CODES: dict[int, tuple[int, str, str]] = {
    10002: (400, "Invalid phone number", "The phone number is invalid."),
    10004: (422, "Missing required parameter", "A required parameter was missing."),
    10005: (404, "Resource not found", "The requested resource or URL could not be found."),
    10007: (500, "Unexpected error", "An unexpected error occured."),
    10009: (401, "Authentication failed", "The required authentication headers were either invalid or not included in the request."),
    10010: (403, "Authorization failed", "You do not have permission to perform the requested action on the specified resource or resources."),
    10011: (429, "Too many requests", "You have exceeded the maximum number of allowed requests."),
    10015: (400, "Bad Request", "The request failed because it was not well-formed."),
    10016: (422, "Phone number must be in +E.164 format", "The specified phone number parameter must be in +E.164 format."),
    40300: (400, "Blocked due to STOP message", "Messages cannot be sent due to an existing block rule."),
}
STATUS_CODES = {400: 10015, 401: 10009, 403: 10010, 404: 10005, 422: 10004, 429: 10011}


def build_app(state: EmulatorState) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app[CALLS] = CarrierCalls()
    app[COMMANDS] = {}
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    app[KEY] = Ed25519PrivateKey.generate()
    app.router.add_post(BASE_PATH + "/calls", _dial)
    app.router.add_get(BASE_PATH + "/calls/{id}", _get_call)
    app.router.add_post(BASE_PATH + "/texml/calls/{connection_id}", _texml_call)
    app.router.add_post(BASE_PATH + "/messages", _send_message)
    app.router.add_get(BASE_PATH + "/messages/{id}", _get_message)
    app.router.add_get(BASE_PATH + "/balance", _balance)
    app.on_cleanup.append(lambda app: app[CALLS].aclose())
    return app


def error(code: int, detail: str | None = None, status: int | None = None, retry_after: str | None = None) -> web.Response:
    default_status, title, default_detail = CODES.get(code, (status or 500, "Unexpected error", "An unexpected error occured."))
    body = {"errors": [{"code": str(code), "title": title, "detail": detail or default_detail,
                        "meta": {"url": f"https://developers.telnyx.com/docs/overview/errors/{code}"}}]}
    headers = {"Retry-After": retry_after} if retry_after else {}
    return web.json_response(body, status=status or default_status, headers=headers)


def fault_error(fault: Fault) -> web.Response:
    number = fault.status
    if number >= 10000:
        return error(number, retry_after=fault.retry_after)
    return error(STATUS_CODES.get(number, 10007), status=number, retry_after=fault.retry_after)


async def _gate(request: web.Request) -> tuple[Fault | None, web.Response | None]:
    state = request.app[STATE]
    state.record(path=request.path, method=request.method)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or token != state.api_key:
        return None, error(10009)
    fault = state.take_fault()
    if fault is not None and fault.kind == "error":
        return fault, fault_error(fault)
    return fault, None


async def _answer(request: web.Request, data: dict[str, Any], fault: Fault | None, status: int = 200) -> web.StreamResponse:
    return await send_body(request, json.dumps(data).encode(), "application/json", fault, status=status)


async def _json(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


async def _balance(request: web.Request) -> web.StreamResponse:
    fault, refused = await _gate(request)
    if refused is not None:
        return refused
    return await _answer(request, {"data": {"record_type": "balance", "balance": "100.00", "currency": "USD",
                                            "credit_limit": "0.00", "available_credit": "100.00",
                                            "pending": "0.00"}}, fault)


async def _dial(request: web.Request) -> web.StreamResponse:
    fault, refused = await _gate(request)
    if refused is not None:
        return refused
    state, calls, commands = request.app[STATE], request.app[CALLS], request.app[COMMANDS]
    body = await _json(request)
    if body is None:
        return error(10015)
    for name in ("connection_id", "to", "from"):
        if not body.get(name):
            return error(10004, f"The '{name}' parameter is required.")
    to, sender = str(body["to"]), str(body["from"])
    if not E164.match(to) or not E164.match(sender):
        return error(10016)
    command_id = body.get("command_id")
    if command_id and command_id in commands:
        # a repeated command: Telnyx ignores it and answers with the call it placed
        call = calls.calls[commands[command_id]]
        state.record(event="call_deduplicated", call_control_id=call["call_control_id"], command_id=command_id)
        return await _answer(request, {"data": _call_view(call)}, fault)
    call_id = "v3:" + uuid.uuid4().hex
    call = {"call_control_id": call_id, "call_leg_id": str(uuid.uuid4()), "call_session_id": str(uuid.uuid4()),
            "connection_id": str(body["connection_id"]), "to": to, "from": sender, "is_alive": False,
            "record_type": "call", "start_time": _iso(), "state": "dialing"}
    if command_id:
        commands[command_id] = call_id
    state.record(event="call_created", call_control_id=call_id, to=to, **{"from": sender})
    hook = _hook(request.app, body.get("webhook_url"))
    calls.start(call_id, call, _carry_out(request.app, call, body.get("stream_url"), None, None, hook))
    return await _answer(request, {"data": _call_view(call)}, fault)


def _hook(app: web.Application, url: str | None) -> StatusSender:
    return StatusSender(url, headers_for=lambda target, params, body: signed_headers(app, body), json_body=True)


def _call_view(call: dict[str, Any]) -> dict[str, Any]:
    view = {k: call[k] for k in ("call_control_id", "call_leg_id", "call_session_id", "is_alive", "record_type",
                                 "start_time")}
    if not call["is_alive"] and call["state"] == "hangup":
        view["end_time"] = call.get("end_time")
    return view


async def _get_call(request: web.Request) -> web.StreamResponse:
    fault, refused = await _gate(request)
    if refused is not None:
        return refused
    call = request.app[CALLS].calls.get(request.match_info["id"])
    if call is None or "call_control_id" not in call:
        return error(10005)
    return await _answer(request, {"data": _call_view(call)}, fault)


async def _texml_call(request: web.Request) -> web.StreamResponse:
    fault, refused = await _gate(request)
    if refused is not None:
        return refused
    state, calls = request.app[STATE], request.app[CALLS]
    body = await _json(request)
    if body is None:
        return error(10015)
    to, sender = str(body.get("To", "")), str(body.get("From", ""))
    if not E164.match(to) or not E164.match(sender):
        return error(10016)
    if not body.get("Url") and not body.get("Texml"):
        return error(10004, "Url or Texml is required.")
    sid = str(uuid.uuid4())
    call = {"call_sid": sid, "call_control_id": "v3:" + uuid.uuid4().hex, "call_leg_id": sid,
            "call_session_id": str(uuid.uuid4()), "to": to, "from": sender, "is_alive": False,
            "record_type": "call", "start_time": _iso(), "state": "queued", "status": "queued"}
    state.record(event="call_created", call_control_id=call["call_control_id"], to=to, **{"from": sender})
    hook = _hook(request.app, body.get("StatusCallback"))
    calls.start(call["call_control_id"], call,
                _carry_out(request.app, call, None, body.get("Url"), body.get("Texml"), hook))
    return await _answer(request, {"call_sid": sid, "from": sender, "to": to, "status": "queued"}, fault)


async def _carry_out(app: web.Application, call: dict[str, Any], stream_url: str | None, url: str | None,
                     texml: str | None, hook: StatusSender) -> None:
    from urllib.parse import urlencode

    from voicerouter.transports import telnyx

    state, calls = app[STATE], app[CALLS]

    async def event(kind: str) -> None:
        await hook.post({"data": {"event_type": kind, "id": str(uuid.uuid4()), "occurred_at": _iso(),
                                  "record_type": "event", "payload": {
                                      "call_control_id": call["call_control_id"], "call_leg_id": call["call_leg_id"],
                                      "call_session_id": call["call_session_id"], "from": call["from"],
                                      "to": call["to"], "state": call["state"]}}})

    await event("call.initiated")
    call["is_alive"], call["state"], call["status"] = True, "answered", "in-progress"
    await event("call.answered")
    try:
        parameters: dict[str, str] = {}
        if stream_url is None and (url or texml):
            if url:
                form = telnyx.call_params(call.get("call_sid") or call["call_control_id"], call["to"], call["from"])
                body = urlencode(form).encode()
                texml = await fetch_document(url, form, signed_headers(app, body), body=body)
            stream_url, parameters, call["verb"] = follow("telnyx", texml or "")
        if stream_url:
            result = await be_callee(state, "telnyx", stream_url, parameters, call["call_control_id"])
            calls.results[call["call_control_id"]] = result
            if result.error:
                call["stream_error"] = result.error
    except Exception as exc:
        call["error"] = f"{type(exc).__name__}: {exc}"
    call["is_alive"], call["state"], call["status"], call["end_time"] = False, "hangup", "completed", _iso()
    await event("call.hangup")


def signed_headers(app: web.Application, body: bytes) -> dict[str, str]:
    """Telnyx's webhook signature: Ed25519 over `timestamp|body` with the emulator's key (see PUBLIC_KEY)."""
    from voicerouter.transports import telnyx

    stamp = int(time.time())
    return {telnyx.TIMESTAMP_HEADER: str(stamp), telnyx.SIGNATURE_HEADER: telnyx.sign(app[KEY], body, stamp)}


def public_key(app: web.Application) -> str:
    """The base64 Ed25519 public key that verifies this emulator's webhooks (a `serve` needs it)."""
    import base64

    from cryptography.hazmat.primitives import serialization

    raw = app[KEY].public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


async def _send_message(request: web.Request) -> web.StreamResponse:
    fault, refused = await _gate(request)
    if refused is not None:
        return refused
    state, calls = request.app[STATE], request.app[CALLS]
    body = await _json(request)
    if body is None:
        return error(10015)
    to, sender, text = str(body.get("to", "")), str(body.get("from", "")), body.get("text")
    if not to or not sender:
        return error(10004, "The 'to' and 'from' parameters are required.")
    if not E164.match(to):
        return error(10016)
    if not text:
        return error(10004, "The 'text' parameter is required.")
    message_id = str(uuid.uuid4())
    message = {"record_type": "message", "id": message_id, "direction": "outbound", "type": "SMS",
               "messaging_profile_id": body.get("messaging_profile_id"),
               "from": {"phone_number": sender, "carrier": "Telnyx", "line_type": "Wireless"},
               "to": [{"phone_number": to, "status": "queued", "carrier": "Emulated", "line_type": "Wireless"}],
               "text": text, "parts": 1, "encoding": "GSM-7", "received_at": _iso(), "sent_at": None,
               "completed_at": None, "errors": []}
    calls.messages[message_id] = message
    state.record(event="message_created", id=message_id, to=to, **{"from": sender})
    hook = _hook(request.app, body.get("webhook_url"))
    calls.spawn(_deliver(message, hook))
    return await _answer(request, {"data": message}, fault)


async def _deliver(message: dict[str, Any], hook: StatusSender) -> None:
    import asyncio

    for status, event in (("sent", "message.sent"), ("delivered", "message.finalized")):
        await asyncio.sleep(0.01)
        message["to"][0]["status"] = status
        message["sent_at" if status == "sent" else "completed_at"] = _iso()
        await hook.post({"data": {"event_type": event, "id": str(uuid.uuid4()), "occurred_at": _iso(),
                                  "record_type": "event", "payload": message}})


async def _get_message(request: web.Request) -> web.StreamResponse:
    fault, refused = await _gate(request)
    if refused is not None:
        return refused
    message = request.app[CALLS].messages.get(request.match_info["id"])
    if message is None:
        return error(10005)
    return await _answer(request, {"data": message}, fault)
