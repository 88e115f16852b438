"""A Twilio REST emulator (API 2010-04-01): outbound calls and SMS, with real calls behind them.

Routes: `POST/GET /2010-04-01/Accounts/{AccountSid}/Calls.json`, `GET .../Calls/{CallSid}.json`,
`POST/GET .../Messages.json`, `GET .../Messages/{Sid}.json`, `GET /2010-04-01/Accounts/{AccountSid}.json`.
Form-encoded bodies, HTTP Basic auth (any account SID, the emulator's key as auth token), errors as
Twilio's JSON `{code, message, more_info, status}`. A placed call is carried out: the emulator fetches
the `Url` (POST, with CallSid/From/To/CallStatus, signed with `X-Twilio-Signature`) or takes the
inline `Twiml`, and on `<Connect><Stream url>` connects a Media Streams WebSocket and speaks the
callee WAV into it (the far end of `voicerouter load`). Status callbacks (`StatusCallback`) are
POSTed signed as well.

Faults: `error:STATUS` answers that HTTP status with Twilio's code for it; `error:CODE` (a Twilio
error code, e.g. `error:21610`, `error:20429:2`) answers that code with its HTTP status. Every other
fault (`hang`, `slow`, `stall`, `drop`, `malformed`, `truncate`) strikes *after* a call or message
was created, as a lost answer does: the resource exists, the client just does not hear about it.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hmac
import re
import uuid
from typing import Any

from aiohttp import web

from voicerouter.testing.carrier_common import CarrierCalls, StatusSender, be_callee, fetch_document, follow
from voicerouter.testing.server import EmulatorState, Fault, send_body
from voicerouter.transports.twilio import SIGNATURE_HEADER, signature

STATE = web.AppKey("state", EmulatorState)
CALLS = web.AppKey("calls", CarrierCalls)
API = "/2010-04-01/Accounts/{account}"
E164 = re.compile(r"^\+[1-9]\d{1,14}$")

# code -> (HTTP status, message) for the codes the fault grammar can ask for
CODES: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource was not found"),
    20429: (429, "Too Many Requests"),
    10004: (429, "Call concurrency limit exceeded"),
    20500: (500, "Internal Server Error"),
    20503: (503, "Service Unavailable"),
    21201: (400, "No 'To' number is specified"),
    21211: (400, "Invalid 'To' Phone Number"),
    21212: (400, "Invalid 'From' Phone Number"),
    21215: (400, "Geo Permission configuration is not permitting call"),
    21408: (400, "Permission to send an SMS has not been enabled for the region indicated by the 'To' number"),
    21606: (400, "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21614: (400, "'To' number is not a valid mobile number"),
}
STATUS_CODES = {400: 21201, 401: 20003, 403: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}


def build_app(state: EmulatorState) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app[CALLS] = CarrierCalls()
    app.router.add_get(API + ".json", _account)
    app.router.add_post(API + "/Calls.json", _create_call)
    app.router.add_get(API + "/Calls.json", _list("calls"))
    app.router.add_get(API + "/Calls/{sid}.json", _fetch("calls"))
    app.router.add_post(API + "/Messages.json", _create_message)
    app.router.add_get(API + "/Messages.json", _list("messages"))
    app.router.add_get(API + "/Messages/{sid}.json", _fetch("messages"))
    app.on_cleanup.append(lambda app: app[CALLS].aclose())
    return app


def error(code: int, message: str | None = None, status: int | None = None, retry_after: str | None = None) -> web.Response:
    default_status, default_message = CODES.get(code, (status or 400, "Error"))
    status = status or default_status
    body = {"code": code, "message": message or default_message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}
    headers = {"Retry-After": retry_after} if retry_after else {}
    return web.json_response(body, status=status, headers=headers)


def fault_error(fault: Fault) -> web.Response:
    number = fault.status
    if number >= 10000:
        return error(number, retry_after=fault.retry_after)
    return error(STATUS_CODES.get(number, 20500 if number >= 500 else 21201), status=number,
                 retry_after=fault.retry_after)


def _authorized(request: web.Request, state: EmulatorState) -> bool:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return user == request.match_info["account"] and hmac.compare_digest(password, state.api_key)


async def _gate(request: web.Request) -> tuple[Fault | None, web.Response | None]:
    """Auth (consumes no fault), then the request's fault: an `error` answers now."""
    state = request.app[STATE]
    state.record(path=request.path, method=request.method, query=dict(request.query))
    if not _authorized(request, state):
        return None, error(20003)
    fault = state.take_fault()
    if fault is not None and fault.kind == "error":
        return fault, fault_error(fault)
    return fault, None


def now_rfc2822() -> str:
    return email.utils.formatdate(usegmt=False).replace("-0000", "+0000")


async def _answer(request: web.Request, data: dict[str, Any], fault: Fault | None, status: int = 200) -> web.StreamResponse:
    import json

    return await send_body(request, json.dumps(data).encode(), "application/json", fault, status=status)


async def _account(request: web.Request) -> web.StreamResponse:
    fault, refused = await _gate(request)
    if refused is not None:
        return refused
    sid = request.match_info["account"]
    return await _answer(request, {"sid": sid, "status": "active", "type": "Full", "friendly_name": "emulator"}, fault)


async def _create_call(request: web.Request) -> web.StreamResponse:
    fault, refused = await _gate(request)
    if refused is not None:
        return refused
    state, calls = request.app[STATE], request.app[CALLS]
    form = await request.post()
    to, sender = str(form.get("To", "")), str(form.get("From", ""))
    if not to:
        return error(21201)
    if not E164.match(to):
        return error(21211, f"The 'To' number {to} is not a valid phone number.")
    if not E164.match(sender):
        return error(21212, f"The 'From' number {sender} is not a valid phone number.")
    url, twiml = form.get("Url"), form.get("Twiml")
    if not url and not twiml:
        return error(21205, "Url or Twiml is required", status=400)
    account = request.match_info["account"]
    sid = "CA" + uuid.uuid4().hex
    call = {
        "sid": sid, "account_sid": account, "to": to, "from": sender, "status": "queued",
        "direction": "outbound-api", "date_created": now_rfc2822(), "date_updated": now_rfc2822(),
        "start_time": None, "end_time": None, "duration": None, "api_version": "2010-04-01",
        "uri": f"/2010-04-01/Accounts/{account}/Calls/{sid}.json",
    }
    state.record(event="call_created", sid=sid, to=to, **{"from": sender})
    callback = str(form.get("StatusCallback", "")) or None
    sender_hook = _hook(callback, state)
    calls.start(sid, call, _carry_out(request.app, call, str(url) if url else None, str(twiml) if twiml else None,
                                      sender_hook))
    return await _answer(request, call, fault, status=201)


async def _carry_out(app: web.Application, call: dict[str, Any], url: str | None, twiml: str | None,
                     hook: StatusSender) -> None:
    """Ring, answer, run the document, hang up; the call's status follows (and is POSTed to the hook)."""
    state, calls = app[STATE], app[CALLS]

    def params() -> dict[str, str]:
        return {"CallSid": call["sid"], "AccountSid": call["account_sid"], "From": call["from"], "To": call["to"],
                "CallStatus": call["status"], "Direction": "outbound-api", "ApiVersion": "2010-04-01"}

    async def move(status: str) -> None:
        call["status"], call["date_updated"] = status, now_rfc2822()
        if status == "in-progress":
            call["start_time"] = now_rfc2822()
        if status in ("completed", "failed"):
            call["end_time"] = now_rfc2822()
        await hook.post({**params(), "CallbackSource": "call-progress-events"})

    await move("ringing")
    await move("in-progress")
    try:
        if url:
            form = params()
            document = await fetch_document(url, form, {SIGNATURE_HEADER: signature(state.api_key, url, form)})
        else:
            document = twiml or ""
        stream_url, parameters, verb = follow("twilio", document)
        call["verb"] = verb
        if stream_url:
            result = await be_callee(state, "twilio", stream_url, parameters, call["sid"])
            calls.results[call["sid"]] = result
            if result.error:
                call["stream_error"] = result.error
        await move("completed")
    except Exception as exc:  # a bad document or an unreachable URL fails the call, as Twilio does
        call["error"] = f"{type(exc).__name__}: {exc}"
        await move("failed")


async def _create_message(request: web.Request) -> web.StreamResponse:
    fault, refused = await _gate(request)
    if refused is not None:
        return refused
    state, calls = request.app[STATE], request.app[CALLS]
    form = await request.post()
    to, sender, body = str(form.get("To", "")), str(form.get("From", "")), str(form.get("Body", ""))
    if not to:
        return error(21604, "A 'To' phone number is required.", status=400)
    if not E164.match(to):
        return error(21211, f"The 'To' number {to} is not a valid phone number.")
    if not body:
        return error(21602, "Message body is required.", status=400)
    account = request.match_info["account"]
    sid = "SM" + uuid.uuid4().hex
    message = {
        "sid": sid, "account_sid": account, "to": to, "from": sender, "body": body, "status": "queued",
        "direction": "outbound-api", "num_segments": "1", "date_created": now_rfc2822(), "date_updated": now_rfc2822(),
        "date_sent": None, "error_code": None, "error_message": None, "api_version": "2010-04-01",
        "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
    }
    calls.messages[sid] = message
    state.record(event="message_created", sid=sid, to=to, **{"from": sender})
    callback = str(form.get("StatusCallback", "")) or None
    hook = _hook(callback, state)
    calls.spawn(_deliver(message, hook))
    return await _answer(request, message, fault, status=201)


async def _deliver(message: dict[str, Any], hook: StatusSender) -> None:
    for status in ("sent", "delivered"):
        await asyncio.sleep(0.01)
        message["status"], message["date_updated"] = status, now_rfc2822()
        if status == "sent":
            message["date_sent"] = now_rfc2822()
        await hook.post({"MessageSid": message["sid"], "SmsSid": message["sid"], "AccountSid": message["account_sid"],
                         "From": message["from"], "To": message["to"], "MessageStatus": status, "SmsStatus": status,
                         "ApiVersion": "2010-04-01"})


def _list(kind: str):
    async def handler(request: web.Request) -> web.StreamResponse:
        fault, refused = await _gate(request)
        if refused is not None:
            return refused
        calls = request.app[CALLS]
        items = list((calls.calls if kind == "calls" else calls.messages).values())
        items = [i for i in items if i["account_sid"] == request.match_info["account"]]
        for field in ("To", "From", "Status"):
            wanted = request.query.get(field)
            if wanted:
                items = [i for i in items if i.get(field.lower()) == wanted]
        items.reverse()  # newest first, as Twilio lists them
        size = min(1000, int(request.query.get("PageSize", "50") or 50))
        base = f"/2010-04-01/Accounts/{request.match_info['account']}/{kind.capitalize()}.json"
        page = {kind: items[:size], "page": 0, "page_size": size, "start": 0, "end": max(0, min(size, len(items)) - 1),
                "first_page_uri": f"{base}?PageSize={size}&Page=0", "next_page_uri": None, "previous_page_uri": None,
                "uri": f"{base}?PageSize={size}&Page=0"}
        return await _answer(request, page, fault)

    return handler


def _fetch(kind: str):
    async def handler(request: web.Request) -> web.StreamResponse:
        fault, refused = await _gate(request)
        if refused is not None:
            return refused
        calls = request.app[CALLS]
        item = (calls.calls if kind == "calls" else calls.messages).get(request.match_info["sid"])
        if item is None or item["account_sid"] != request.match_info["account"]:
            return error(20404)
        return await _answer(request, item, fault)

    return handler


def _hook(url: str | None, state: EmulatorState) -> StatusSender:
    """Status callbacks, signed with the account's auth token (X-Twilio-Signature)."""
    return StatusSender(url, headers_for=lambda target, params, body: {
        SIGNATURE_HEADER: signature(state.api_key, target, {k: str(v) for k, v in params.items()})})
