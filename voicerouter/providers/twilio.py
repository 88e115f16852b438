"""Twilio as a carrier: outbound calls and SMS over the REST API 2010-04-01.

Wire: `POST /2010-04-01/Accounts/{AccountSid}/Calls.json` and `.../Messages.json`, form-encoded,
HTTP Basic auth (account SID : auth token); errors are JSON `{code, message, more_info, status}`.
Twilio has no idempotency key, so after a timeout or a dropped connection once the request was
sent the client looks the call (message) up before anyone may try again: it lists the recent calls
To/From this pair (`GET Calls.json?To=&From=`), and GETs the match (`Calls/{CallSid}.json`).
Found: that call is the result. Not found (twice, a second apart, for a request Twilio may still
be processing): it was not placed, and failover is safe. The lookup itself failing:
`UnknownOutcomeError`, and nobody dials again.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from voicerouter.config.schema import ProviderConfig
from voicerouter.config.secrets import expand
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
    stream_twiml,
)

R = TypeVar("R", PlacedCall, SentMessage)
DEFAULT_BASE_URL = "https://api.twilio.com"
API = "/2010-04-01"
DEFAULT_TOKEN_REF = "${TWILIO_AUTH_TOKEN}"
OPTIONS = ("status_callback",)
CLOCK_SKEW_S = 5.0  # how far before our send a call found by the status check may have been created
LOOKUP_PAGE = 20
LOOKUP_AGAIN_S = 1.0  # a request still in flight at Twilio may create its call a moment later: look twice

# Twilio error codes -> what the chain does (https://www.twilio.com/docs/api/errors)
CODES: dict[int, type[ProviderError]] = {
    20003: AuthError,  # Authenticate: wrong account SID / auth token
    20429: RateLimitedError,  # Too Many Requests
    10004: TransientProviderError,  # Call concurrency limit exceeded
    86008: TransientProviderError,  # Concurrency limit reached
    20500: TransientProviderError,  # Internal server error
    20503: TransientProviderError,  # Service unavailable
    21212: PermissionDeniedError,  # Invalid 'From' phone number (this account's number)
    21215: PermissionDeniedError,  # Geo permission configuration is not permitting the call
    21408: PermissionDeniedError,  # Permission to send an SMS has not been enabled for the region
    21606: PermissionDeniedError,  # The 'From' number is not a valid message-capable Twilio number
    21211: RecipientError,  # Invalid 'To' phone number
    21614: RecipientError,  # 'To' number is not a valid mobile number
    21610: OptedOutError,  # Attempt to send to unsubscribed recipient
}


def create(name: str, kind: Kind, config: ProviderConfig, ctx: BuildContext) -> TwilioCarrier:
    """Factory named by the registry: a Twilio carrier (call or sms) for one routing-table entry."""
    check_carrier_entry(name, kind, config, vendor="twilio", options=OPTIONS)
    if not config.account_sid:
        raise ConfigError(f"provider {name}: twilio needs account_sid")
    token = expand(config.auth_token or DEFAULT_TOKEN_REF, ctx.env, what=f"provider {name}", secret=True)
    return TwilioCarrier(name, config, kind=kind, token=token)


class TwilioCarrier(CarrierClient):
    type = "twilio"
    codes = CODES
    default_base_url = DEFAULT_BASE_URL

    def __init__(self, name: str, config: ProviderConfig, *, kind: str, token: str) -> None:
        super().__init__(name, config, kind=kind, headers={"Accept": "application/json"},
                         auth=httpx.BasicAuth(config.account_sid or "", token))
        self.account = f"{API}/Accounts/{config.account_sid}"
        self.status_callback = config.options.get("status_callback")
        self._known: set[str] = set()  # sids this client placed: a status check never mistakes them for a lost one

    def parse_error(self, body: bytes) -> tuple[int | None, str]:
        data = json.loads(body)
        code = data.get("code")
        return (int(code) if code is not None else None), str(data.get("message") or "")

    async def probe(self) -> None:
        """Fetch the account: checks the credentials without placing anything."""
        await self._probe(f"{self.account}.json")

    async def place_call(self, request: CallRequest) -> PlacedCall:
        to = check_number(request.to, what="To", provider=self.name)
        sender = request.from_number or self.from_number
        form: dict[str, Any] = {"To": to, "From": sender}
        if request.url or request.serve_url:
            form["Url"] = request.url or serve_voice_url(request, self.type)
        elif request.twiml or request.stream_url:
            form["Twiml"] = request.twiml or stream_twiml(request.stream_url or "")
        else:
            raise TerminalProviderError("a call needs url, twiml or stream_url", provider=self.name)
        callback = status_callback(request, self.type, self.name, self.status_callback)
        if callback:
            form["StatusCallback"] = callback
            form["StatusCallbackEvent"] = ["initiated", "ringing", "answered", "completed"]
        since = time.time()
        try:
            return self._placed(await self._request("POST", f"{self.account}/Calls.json", data=form))
        except (httpx.HTTPError, GarbledAnswer) as exc:
            if not request_sent(exc):
                raise self._not_sent(exc) from None
            return await self._recover(f"{self.account}/Calls.json", "calls", to, sender, since, exc, "call",
                                       lambda item: True, self._placed)

    async def send_sms(self, request: SMSRequest) -> SentMessage:
        to = check_number(request.to, what="To", provider=self.name)
        sender = request.from_number or self.from_number
        form = {"To": to, "From": sender, "Body": request.text}
        callback = status_callback(request, self.type, self.name, self.status_callback)
        if callback:
            form["StatusCallback"] = callback
        since = time.time()
        try:
            return self._sent(await self._request("POST", f"{self.account}/Messages.json", data=form))
        except (httpx.HTTPError, GarbledAnswer) as exc:
            if not request_sent(exc):
                raise self._not_sent(exc) from None
            return await self._recover(f"{self.account}/Messages.json", "messages", to, sender, since, exc,
                                       "message", lambda item: item.get("body") == request.text, self._sent)

    async def _recover(self, path: str, listing: str, to: str, sender: str, since: float, cause: Exception,
                       noun: str, matches: Callable[[dict], bool], result: Callable[..., R]) -> R:
        """The status check after an ambiguous failure: the resource we created, or proof there is none."""
        try:
            for look in range(2):
                if look:
                    await asyncio.sleep(LOOKUP_AGAIN_S)
                page = await self._request("GET", path, params={"To": to, "From": sender, "PageSize": LOOKUP_PAGE})
                for item in page.get(listing) or []:
                    sid = item.get("sid")
                    if not sid or sid in self._known or not matches(item):
                        continue
                    created = email.utils.parsedate_to_datetime(item.get("date_created") or "")
                    if created.timestamp() >= since - CLOCK_SKEW_S:
                        current = await self._request("GET", f"{path.removesuffix('.json')}/{sid}.json")
                        return result(current, recovered=True)
        except (httpx.HTTPError, ProviderError, GarbledAnswer, TypeError, ValueError) as exc:
            raise self._unknown(f"the {noun}", cause) from exc
        raise TransientProviderError(
            f"no answer after sending ({type(cause).__name__}); the status check found no such {noun}: "
            "it did not go out", provider=self.name,
        )

    def _placed(self, data: dict, *, recovered: bool = False) -> PlacedCall:
        sid = data.get("sid")
        if not isinstance(sid, str):
            raise GarbledAnswer(f"no call sid in {str(data)[:200]}")
        self._known.add(sid)
        return PlacedCall(self.name, self.type, sid, str(data.get("status") or "queued"), str(data.get("to") or ""),
                          str(data.get("from") or ""), recovered=recovered)

    def _sent(self, data: dict, *, recovered: bool = False) -> SentMessage:
        sid = data.get("sid")
        if not isinstance(sid, str):
            raise GarbledAnswer(f"no message sid in {str(data)[:200]}")
        self._known.add(sid)
        return SentMessage(self.name, self.type, sid, str(data.get("status") or "queued"), str(data.get("to") or ""),
                           str(data.get("from") or ""), recovered=recovered)
