"""Telnyx as a carrier: outbound calls and SMS over API v2.

Wire: `POST /v2/calls` (Call Control dial: `connection_id`, `to`, `from`, `stream_url`,
`command_id`), `POST /v2/texml/calls/{connection_id}` for a TeXML document (`To`, `From`, `Url` or
`Texml`), `POST /v2/messages` (`from`, `to`, `text`, `messaging_profile_id`), Bearer auth, errors
`{"errors": [{"code": "10009", "title", "detail"}]}` (codes are strings on the wire).
A dial carries the request's key as `command_id`, which Telnyx uses to ignore a repeated command:
after a timeout once the dial was sent the client sends the same dial again, and gets the call
that was placed (or places it once). TeXML calls and messages have no such key: an ambiguous
failure there is an `UnknownOutcomeError`, never a second send.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from voicerouter.config.schema import ProviderConfig
from voicerouter.errors import (
    AuthError,
    ConfigError,
    OptedOutError,
    PermissionDeniedError,
    ProviderError,
    RateLimitedError,
    RecipientError,
    TerminalProviderError,
    TransientProviderError,
)
from voicerouter.providers._common import api_key
from voicerouter.providers.base import BuildContext, Kind
from voicerouter.providers.carrier import (
    CallRequest,
    CarrierClient,
    GarbledAnswer,
    PlacedCall,
    SentMessage,
    SMSRequest,
    check_carrier_entry,
    check_number,
    request_sent,
    serve_voice_url,
    status_callback,
)

DEFAULT_BASE_URL = "https://api.telnyx.com/v2"
DEFAULT_KEY_REF = "${TELNYX_API_KEY}"
OPTIONS = ("webhook_url",)

# Telnyx error codes -> what the chain does (developers.telnyx.com API and messaging error codes)
CODES: dict[int, type[ProviderError]] = {
    10009: AuthError,  # Authentication failed
    10010: PermissionDeniedError,  # Authorization failed
    10011: RateLimitedError,  # Too many requests
    10007: TransientProviderError,  # Unexpected error
    10008: TransientProviderError,  # Request timeout
    10002: RecipientError,  # Invalid phone number
    10016: RecipientError,  # Phone number must be in +E.164 format
    40300: OptedOutError,  # Blocked due to STOP message
}


def create(name: str, kind: Kind, config: ProviderConfig, ctx: BuildContext) -> TelnyxCarrier:
    """Factory named by the registry: a Telnyx carrier (call or sms) for one routing-table entry."""
    check_carrier_entry(name, kind, config, vendor="telnyx", options=OPTIONS)
    if kind == "call" and not config.connection_id:
        raise ConfigError(f"provider {name}: telnyx calls need connection_id")
    return TelnyxCarrier(name, config, kind=kind, key=api_key(name, config, ctx, DEFAULT_KEY_REF))


class TelnyxCarrier(CarrierClient):
    type = "telnyx"
    codes = CODES
    default_base_url = DEFAULT_BASE_URL

    def __init__(self, name: str, config: ProviderConfig, *, kind: str, key: str) -> None:
        super().__init__(name, config, kind=kind, headers={"Authorization": f"Bearer {key}", "Accept": "application/json"})
        self.webhook_url = config.options.get("webhook_url")

    def parse_error(self, body: bytes) -> tuple[int | None, str]:
        first = (json.loads(body).get("errors") or [{}])[0]
        code = first.get("code")
        text = ": ".join(str(p) for p in (first.get("title"), first.get("detail")) if p)
        return (int(code) if code is not None else None), text

    async def probe(self) -> None:
        """Read the account balance: checks the key without placing anything."""
        await self._probe("/balance")

    async def place_call(self, request: CallRequest) -> PlacedCall:
        to = check_number(request.to, what="to", provider=self.name)
        sender = request.from_number or self.from_number
        callback = status_callback(request, self.type, self.name, self.webhook_url)
        if request.url or request.twiml or request.serve_url:
            body: dict[str, Any] = {"To": to, "From": sender}
            if request.url or request.serve_url:
                body["Url"] = request.url or serve_voice_url(request, self.type)
            else:
                body["Texml"] = request.twiml
            if callback:
                body["StatusCallback"] = callback
            try:
                return self._texml_placed(
                    await self._request("POST", f"/texml/calls/{self.config.connection_id}", json=body), to, sender)
            except (httpx.HTTPError, GarbledAnswer) as exc:
                if request_sent(exc):
                    raise self._unknown("the call", exc) from None
                raise self._not_sent(exc) from None
        if not request.stream_url:
            raise TerminalProviderError("a call needs url, twiml or stream_url", provider=self.name)
        dial: dict[str, Any] = {"connection_id": self.config.connection_id, "to": to, "from": sender,
                                "stream_url": request.stream_url, "stream_track": "inbound_track",
                                "command_id": request.key}
        if callback:
            dial["webhook_url"] = callback
        try:
            return self._placed(await self._request("POST", "/calls", json=dial), to, sender)
        except (httpx.HTTPError, GarbledAnswer) as exc:
            if not request_sent(exc):
                raise self._not_sent(exc) from None
            # the same command_id again: Telnyx answers with the call it placed, or places it once
            try:
                data = await self._request("POST", "/calls", json=dial)
                current = await self._request("GET", f"/calls/{self._call_id(data)}")
                return self._placed(current, to, sender, recovered=True)
            except (httpx.HTTPError, ProviderError, GarbledAnswer) as again:
                raise self._unknown("the call", exc) from again

    async def send_sms(self, request: SMSRequest) -> SentMessage:
        to = check_number(request.to, what="to", provider=self.name)
        sender = request.from_number or self.from_number
        body: dict[str, Any] = {"from": sender, "to": to, "text": request.text}
        if self.config.messaging_profile_id:
            body["messaging_profile_id"] = self.config.messaging_profile_id
        callback = status_callback(request, self.type, self.name, self.webhook_url)
        if callback:
            body["webhook_url"] = callback
        try:
            data = await self._request("POST", "/messages", json=body)
            message = data.get("data") or {}
            if not isinstance(message, dict) or not isinstance(message.get("id"), str):
                raise GarbledAnswer(f"no message id in {str(data)[:200]}")
        except (httpx.HTTPError, GarbledAnswer) as exc:
            if request_sent(exc):
                raise self._unknown("the message", exc) from None
            raise self._not_sent(exc) from None
        status = ((message.get("to") or [{}])[0] or {}).get("status") or "queued"
        return SentMessage(self.name, self.type, message["id"], str(status), to, sender)

    def _call_id(self, data: dict) -> str:
        call = data.get("data") or {}
        if not isinstance(call.get("call_control_id"), str):
            raise GarbledAnswer(f"no call_control_id in {str(data)[:200]}")
        return call["call_control_id"]

    def _placed(self, data: dict, to: str, sender: str, *, recovered: bool = False) -> PlacedCall:
        call_id = self._call_id(data)
        call = data["data"]
        extra = {k: str(call[k]) for k in ("call_leg_id", "call_session_id") if call.get(k)}
        status = "active" if call.get("is_alive") else "dialing"
        return PlacedCall(self.name, self.type, call_id, status, to, sender, extra, recovered)

    def _texml_placed(self, data: dict, to: str, sender: str) -> PlacedCall:
        sid = data.get("call_sid") or data.get("sid")
        if not isinstance(sid, str):
            raise GarbledAnswer(f"no call_sid in {str(data)[:200]}")
        return PlacedCall(self.name, self.type, sid, str(data.get("status") or "queued"), to, sender)
