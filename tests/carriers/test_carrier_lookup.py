"""Twilio's status check after a lost answer, on a scripted transport: found late, or not at all."""

from __future__ import annotations

import email.utils
import json

import httpx
import pytest

from voicerouter.config.schema import ProviderConfig
from voicerouter.errors import TransientProviderError, UnknownOutcomeError
from voicerouter.providers import twilio
from voicerouter.providers.base import BuildContext
from voicerouter.providers.carrier import SMSRequest

SID = "AC0123456789abcdef0123456789abcdef"


def carrier(handler) -> twilio.TwilioCarrier:
    config = ProviderConfig.model_validate({"type": "twilio", "kind": "sms", "account_sid": SID,
                                            "auth_token": "${T}", "from": "+15550100"})
    # Not a common word: the value is remembered for redaction for the rest of the process.
    client = twilio.create("tw", "sms", config, BuildContext(env={"T": "lookup-test-auth-token"}))
    client._client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="https://api.twilio.com")
    return client


def message(sid: str, body: str) -> dict:
    return {"sid": sid, "to": "+15550111", "from": "+15550100", "body": body, "status": "queued",
            "date_created": email.utils.formatdate()}


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    monkeypatch.setattr(twilio, "LOOKUP_AGAIN_S", 0.01)


async def test_a_message_that_appears_on_the_second_look_is_the_result():
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path.rsplit('/', 1)[-1]}")
        if request.method == "POST":
            raise httpx.ReadTimeout("no answer", request=request)
        if request.url.path.endswith("Messages.json"):
            lists = sum(1 for s in seen if s == "GET Messages.json")
            items = [message("SM1", "hi")] if lists == 2 else []
            return httpx.Response(200, json={"messages": items})
        return httpx.Response(200, json=message("SM1", "hi"))

    sent = await carrier(handler).send_sms(SMSRequest("+15550111", "hi"))
    assert sent.id == "SM1" and sent.recovered
    assert seen == ["POST Messages.json", "GET Messages.json", "GET Messages.json", "GET SM1.json"]


async def test_no_message_after_two_looks_means_not_sent_and_safe_to_fail_over():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            raise httpx.RemoteProtocolError("connection closed", request=request)
        # another message to the same number, with other text, is not ours
        return httpx.Response(200, content=json.dumps({"messages": [message("SM9", "other text")]}))

    with pytest.raises(TransientProviderError) as lost:
        await carrier(handler).send_sms(SMSRequest("+15550111", "hi"))
    assert lost.value.fails_over and "found no such message" in lost.value.message


async def test_a_lookup_that_fails_too_stops_everything():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(503, json={"code": 20503, "message": "Service Unavailable", "status": 503})

    with pytest.raises(UnknownOutcomeError) as unknown:
        await carrier(handler).send_sms(SMSRequest("+15550111", "hi"))
    assert not unknown.value.fails_over and unknown.value.exit_code == 6


async def test_a_connection_refused_is_not_a_lost_answer():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(TransientProviderError) as refused:
        await carrier(handler).send_sms(SMSRequest("+15550111", "hi"))
    assert "connection failed" in refused.value.message
