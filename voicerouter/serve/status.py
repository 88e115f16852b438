"""Carrier status callbacks: Twilio and Telnyx tell `serve` how an outbound call or message went.

    POST /twilio/status   form-encoded, X-Twilio-Signature (CallSid + CallStatus, or MessageSid + MessageStatus)
    POST /telnyx/status   JSON webhook, telnyx-signature-ed25519 (call.* and message.* events)

Each accepted callback is one `carrier_status` event, written to `--out` as
`carrier-status.events.jsonl` with the call or message id as its session id, so `voicerouter report`
can count outcomes per carrier and route. `place_call`/`send_sms` with `serve_url` point the
carriers here and put the route, tenant and carrier instance in the query (`route`, `tenant`,
`region`, `carrier`); without them the event says only what the carrier said.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from voicerouter.session.events import Event, EventType

LOG_NAME = "carrier-status.events.jsonl"
# the statuses after which nothing more happens to the call or message
FINAL = frozenset({"completed", "busy", "failed", "no-answer", "canceled", "delivered", "undelivered", "read",
                   "hangup", "delivery_failed", "sending_failed", "delivery_unconfirmed"})


async def twilio_status(request: web.Request) -> web.Response:
    from voicerouter.serve.app import twilio_form

    form = await twilio_form(request)
    if isinstance(form, web.Response):
        return form
    if form.get("MessageSid"):
        kind, item_id, status = "sms", form["MessageSid"], form.get("MessageStatus") or form.get("SmsStatus")
        detail = {"error_code": form.get("ErrorCode")} if form.get("ErrorCode") else {}
    elif form.get("CallSid"):
        kind, item_id, status = "call", form["CallSid"], form.get("CallStatus")
        detail = {k: form[v] for k, v in (("duration_s", "CallDuration"), ("sip_code", "SipResponseCode")) if form.get(v)}
    else:
        return web.Response(status=400, text="CallSid or MessageSid is missing\n")
    record(request, "twilio", kind, item_id, status or "unknown", detail)
    return web.Response(status=204)


async def telnyx_status(request: web.Request) -> web.Response:
    from voicerouter.serve.app import telnyx_body

    body = await telnyx_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        data = json.loads(body)["data"]
        event_type, payload = str(data["event_type"]), data.get("payload") or {}
    except (ValueError, KeyError, TypeError):
        return web.Response(status=400, text="not a Telnyx webhook (data.event_type)\n")
    if event_type.startswith("message."):
        recipient = (payload.get("to") or [{}])[0] or {}
        kind, item_id, status = "sms", str(payload.get("id") or ""), str(recipient.get("status") or event_type)
        detail = {"errors": payload["errors"]} if payload.get("errors") else {}
    elif event_type.startswith("call."):
        kind, item_id = "call", str(payload.get("call_control_id") or "")
        status = {"call.initiated": "initiated", "call.answered": "in-progress", "call.hangup": "hangup"}.get(
            event_type, event_type)
        detail = {"hangup_cause": payload["hangup_cause"]} if payload.get("hangup_cause") else {}
    else:
        return web.Response(status=204)  # another product's event: acknowledged, not recorded
    if not item_id:
        return web.Response(status=400, text="the webhook names no call or message\n")
    record(request, "telnyx", kind, item_id, status, {"event_type": event_type, **detail})
    return web.Response(status=204)


def record(request: web.Request, carrier_type: str, kind: str, item_id: str, status: str,
           detail: dict[str, Any]) -> None:
    """One `carrier_status` event for the log (and the server's own log at INFO)."""
    import logging

    from voicerouter.serve.app import MANAGER

    query = request.query
    event = Event(
        EventType.CARRIER_STATUS, t=0.0, wall=time.time(), session_id=item_id, tenant=query.get("tenant") or None,
        region=query.get("region") or None, route=query.get("route") or None,
        provider=query.get("carrier") or carrier_type,
        data={"carrier_type": carrier_type, "kind": kind, "status": status, "final": status in FINAL, **detail},
    )
    logging.getLogger("voicerouter.serve").info("%s %s %s: %s", carrier_type, kind, item_id, status)
    out_dir = request.app[MANAGER].options.out_dir
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with (out_dir / LOG_NAME).open("a", encoding="utf-8") as stream:
            stream.write(event.to_json() + "\n")


ROUTES = (web.post("/twilio/status", twilio_status), web.post("/telnyx/status", telnyx_status))
