"""The carrier contracts: what placing an outbound call or sending an SMS asks of a carrier.

A carrier client (`twilio`, `telnyx`) is a provider of kind `call` or `sms`; the failover chain of
those kinds implements the same protocol. Clients raise the typed errors of `voicerouter.errors`,
chosen from the carrier's own error code so the chain knows what to do:

- transient (network, 5xx, 429, concurrency limits): retry, then fail over;
- `AuthError` / `PermissionDeniedError`: fail over and open that carrier's breaker;
- `RecipientError` / `OptedOutError`: stop, never fail over (another carrier would not change the
  answer, and routing around an opt-out breaks compliance);
- `UnknownOutcomeError`: the request may have gone out and its status could not be checked: stop,
  so nothing is ever sent twice.

A client resolves "did it go out?" itself after a timeout or a dropped connection once the request
was sent (a status check, or an idempotent retry), so a failure the chain sees is never a maybe.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from xml.sax.saxutils import quoteattr

import httpx

from voicerouter.config.secrets import redact
from voicerouter.errors import ConfigError, ProviderError, RateLimitedError, RecipientError, UnknownOutcomeError
from voicerouter.providers._common import check_options, timeout_of
from voicerouter.providers.base import Provider
from voicerouter.providers.http import (
    ClientProvider,
    check_base_url,
    error_for_status,
    malformed,
    parse_retry_after,
    snippet,
    transport_error,
)

if TYPE_CHECKING:
    from voicerouter.config.schema import ProviderConfig

E164 = re.compile(r"^\+[1-9]\d{1,14}$")


@dataclass(frozen=True)
class CallRequest:
    """An outbound call. What the callee hears comes from one of: a TwiML/TeXML document URL (`url`),
    an inline document (`twiml`), a media stream URL (`stream_url`, a `wss://` endpoint that speaks the
    carrier's media stream protocol), or a `voicerouter serve` deployment (`serve_url`), whose voice
    webhook for the carrier answers with `<Connect><Stream>` to one of its sessions."""

    to: str
    from_number: str | None = None  # None: the carrier instance's configured `from`
    url: str | None = None
    twiml: str | None = None
    stream_url: str | None = None
    status_callback: str | None = None
    serve_url: str | None = None  # a `voicerouter serve` base URL: the carrier fetches its voice webhook there
    serve_query: str = ""  # the call's routing context for serve (tenant, region, flags), URL-encoded
    # one key per logical call: a carrier that supports idempotent requests (Telnyx command_id)
    # gets the same key on every retry, so a retry can never place a second call
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class SMSRequest:
    to: str
    text: str
    from_number: str | None = None
    status_callback: str | None = None
    serve_url: str | None = None  # a `voicerouter serve` that records the delivery status callbacks
    serve_query: str = ""
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class PlacedCall:
    """A call the carrier accepted (it is ringing or queued; answering happens later)."""

    carrier: str  # provider instance name
    carrier_type: str  # twilio, telnyx
    id: str  # CallSid / call_control_id
    status: str
    to: str
    from_number: str
    extra_ids: dict[str, str] = field(default_factory=dict)  # call_leg_id, call_session_id, ...
    recovered: bool = False  # found by a status check after an ambiguous failure, not by the answer


@dataclass(frozen=True)
class SentMessage:
    carrier: str
    carrier_type: str
    id: str  # MessageSid / message id
    status: str
    to: str
    from_number: str
    recovered: bool = False


@runtime_checkable
class CallProvider(Provider, Protocol):
    async def place_call(self, request: CallRequest) -> PlacedCall:
        """Place the call once; raise a typed error when it was not placed."""


@runtime_checkable
class SMSProvider(Provider, Protocol):
    async def send_sms(self, request: SMSRequest) -> SentMessage:
        """Send the message once; raise a typed error when it was not sent."""


def stream_twiml(stream_url: str) -> str:
    """The TwiML/TeXML document that connects the callee to a media stream."""
    return f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect><Stream url={quoteattr(stream_url)}/></Connect></Response>"


def serve_voice_url(request: CallRequest, carrier_type: str) -> str:
    """The voice webhook of a `voicerouter serve` for this carrier (`/twilio/voice`, `/telnyx/voice`)."""
    url = f"{(request.serve_url or '').rstrip('/')}/{carrier_type}/voice"
    return f"{url}?{request.serve_query}" if request.serve_query else url


def status_callback(request: CallRequest | SMSRequest, carrier_type: str, carrier: str,
                    configured: str | None) -> str | None:
    """Where the carrier posts status events: the request's URL, else serve's `/{carrier}/status` (with
    the route context and this carrier instance in the query), else the provider's configured one."""
    if request.status_callback:
        return request.status_callback
    if request.serve_url:
        from urllib.parse import urlencode

        query = "&".join(q for q in (request.serve_query, urlencode({"carrier": carrier})) if q)
        return f"{request.serve_url.rstrip('/')}/{carrier_type}/status?{query}"
    return configured


def request_sent(exc: Exception) -> bool:
    """Could the carrier have received (and acted on) the request before this failure?

    Only failures to connect are sure to have sent nothing; a timeout or a dropped connection after
    the request was written may have placed the call.
    """
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol)


ErrorClass = type[ProviderError]


class GarbledAnswer(Exception):
    """A 2xx the client cannot read (not JSON, no id): the carrier accepted the request, so this is a
    lost answer to resolve like a timeout after sending, never a failure to retry elsewhere."""


def check_number(number: str, *, what: str, provider: str) -> str:
    """E.164 or a `RecipientError` before anything is sent (no carrier would take it either)."""
    if not E164.match(number):
        raise RecipientError(f"{what} {number!r} is not an E.164 number like +15550100", provider=provider)
    return number


def check_carrier_entry(name: str, kind: str, config: ProviderConfig, *, vendor: str, options: Iterable[str]) -> None:
    """What every carrier factory checks first: a carrier offers kinds call and sms, and known options only."""
    if kind not in ("call", "sms"):
        raise ConfigError(f"provider {name}: {vendor} has no {kind} kind", hint="use kind: call or kind: sms")
    check_options(name, vendor, config, options)


class CarrierClient(ClientProvider):
    """What the Twilio and Telnyx clients share: the kind, the base URL and timeout from the table entry,
    the error-code table, typed request failures."""

    type = "carrier"
    codes: Mapping[int, ErrorClass] = {}  # the carrier's error codes -> the class that decides failover
    default_base_url = ""  # the carrier's API; an entry's base_url wins

    def __init__(self, name: str, config: ProviderConfig, *, kind: str, headers: Mapping[str, str],
                 auth: httpx.Auth | None = None) -> None:
        base_url = check_base_url(config.base_url or self.default_base_url, provider=name)
        super().__init__(name, config, base_url=base_url, timeout_s=timeout_of(config), headers=headers)
        self.kind = kind
        if auth is not None:
            self._client.auth = auth
        if not config.from_number:
            raise ConfigError(f"provider {name}: {self.type} needs from (the caller id / sender, E.164)")
        self.from_number = config.from_number

    def error_for_code(self, code: int, message: str = "", *, status: int | None = None,
                       headers: Mapping[str, str] | None = None) -> ProviderError:
        """The typed error for one of the carrier's error codes (unknown codes go by HTTP status)."""
        text = f"{self.type} error {code}: {message}" if message else f"{self.type} error {code}"
        cls = self.codes.get(code)
        if cls is None:
            error = error_for_status(status or 400, text, provider=self.name, headers=headers)
        elif cls is RateLimitedError:
            error = RateLimitedError(text, provider=self.name, status=status,
                                     retry_after=parse_retry_after(headers or {}))
        else:
            error = cls(text, provider=self.name, status=status)
        error.code = code
        return error

    def parse_error(self, body: bytes) -> tuple[int | None, str]:
        """(code, message) from the carrier's error body."""
        raise NotImplementedError

    async def _request(self, method: str, path: str, **kw: object) -> dict:
        """One request: the JSON answer, or a typed error. `httpx.HTTPError` escapes unchanged so the
        caller can tell a request that never left from one that may have been acted on."""
        response = await self._client.request(method, path, **kw)  # type: ignore[arg-type]
        body = await response.aread()
        if not response.is_success:
            code, message = None, snippet(body)
            try:
                code, message = self.parse_error(body)
            except (ValueError, KeyError, TypeError):
                pass
            if code is None:
                raise error_for_status(response.status_code, redact(message), provider=self.name,
                                       headers=response.headers)
            raise self.error_for_code(code, redact(message), status=response.status_code, headers=response.headers)
        try:
            data = json.loads(body)
        except ValueError:
            raise GarbledAnswer(f"HTTP {response.status_code} with a body that is not JSON: {snippet(body)!r}") from None
        if not isinstance(data, dict):
            raise GarbledAnswer(f"HTTP {response.status_code} with a body that is not a JSON object: {snippet(body)!r}")
        return data

    async def _probe(self, path: str) -> None:
        """A read-only request that checks the credentials; every failure typed."""
        try:
            await self._request("GET", path)
        except httpx.HTTPError as exc:
            raise self._not_sent(exc) from None
        except GarbledAnswer as exc:
            raise malformed("probe", str(exc), provider=self.name) from None

    def _not_sent(self, exc: Exception) -> ProviderError:
        return transport_error(exc, provider=self.name)

    def _unknown(self, what: str, exc: Exception) -> UnknownOutcomeError:
        return UnknownOutcomeError(
            f"{what} may have gone out ({type(exc).__name__}: {redact(str(exc)) or 'no answer'}) and its status "
            "could not be checked; not retried, so it cannot be duplicated", provider=self.name,
            hint="check the carrier's console or status callbacks before trying again",
        )
