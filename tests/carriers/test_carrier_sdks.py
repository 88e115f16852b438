"""The official SDKs (twilio 9.x, telnyx) against the emulators: same paths, auth, bodies and errors."""

from __future__ import annotations

import asyncio

import pytest

from voicerouter.testing.server import emulate

twilio_rest = pytest.importorskip("twilio.rest")
telnyx = pytest.importorskip("telnyx")

SID = "AC0123456789abcdef0123456789abcdef"


def twilio_client(url: str, token: str = "test-key"):
    client = twilio_rest.Client(SID, token)
    client.api.base_url = url  # the SDK's base-URL override: every 2010-04-01 resource goes there
    return client


async def test_twilio_sdk_places_a_call_fetches_it_and_sends_a_message():
    async with emulate("twilio") as emu:
        client = twilio_client(emu.url)
        call = await asyncio.to_thread(client.calls.create, to="+15550111", from_="+15550100",
                                       twiml="<Response><Say>Hello</Say></Response>")
        assert call.sid.startswith("CA") and call.status == "queued" and call.to == "+15550111"
        fetched = await asyncio.to_thread(client.calls(call.sid).fetch)
        assert fetched.sid == call.sid and fetched.direction == "outbound-api"
        listed = await asyncio.to_thread(client.calls.list, to="+15550111", limit=5)
        assert [c.sid for c in listed] == [call.sid]
        message = await asyncio.to_thread(client.messages.create, to="+15550111", from_="+15550100", body="Hi there")
        assert message.sid.startswith("SM") and message.body == "Hi there"
        form = [r for r in emu.state.requests if r.get("method") == "POST"]
        assert [r["path"] for r in form] == [f"/2010-04-01/Accounts/{SID}/Calls.json",
                                             f"/2010-04-01/Accounts/{SID}/Messages.json"]


async def test_twilio_sdk_sees_twilio_errors():
    from twilio.base.exceptions import TwilioRestException

    async with emulate("twilio", faults="error:21610*1") as emu:
        client = twilio_client(emu.url)
        with pytest.raises(TwilioRestException) as opted_out:
            await asyncio.to_thread(client.messages.create, to="+15550111", from_="+15550100", body="Hi")
        assert opted_out.value.code == 21610 and opted_out.value.status == 400
        assert "unsubscribed" in opted_out.value.msg
        with pytest.raises(TwilioRestException) as auth:
            await asyncio.to_thread(twilio_client(emu.url, "wrong").calls.create, to="+15550111", from_="+15550100",
                                    url="https://example.com/twiml")
        assert auth.value.code == 20003 and auth.value.status == 401


async def test_telnyx_sdk_dials_idempotently_and_sends_a_message():
    async with emulate("telnyx") as emu:
        client = telnyx.Telnyx(api_key="test-key", base_url=emu.url + "/v2", max_retries=0)

        def dial():
            return client.calls.dial(connection_id="conn-1", from_="+15550100", to="+15550111",
                                     stream_url="ws://127.0.0.1:9/unused", command_id="cmd-42")

        first = await asyncio.to_thread(dial)
        again = await asyncio.to_thread(dial)
        assert first.data.call_control_id.startswith("v3:") and first.data.is_alive is False
        assert again.data.call_control_id == first.data.call_control_id  # same command_id, same call
        assert sum(1 for r in emu.state.requests if r.get("event") == "call_created") == 1
        sent = await asyncio.to_thread(client.messages.send, from_="+15550100", to="+15550111", text="Hi")
        assert sent.data.id and sent.data.to[0].phone_number == "+15550111" and sent.data.text == "Hi"


async def test_telnyx_sdk_sees_telnyx_errors(monkeypatch):
    async with emulate("telnyx", faults="error:10011*1") as emu:
        monkeypatch.setenv("TELNYX_BASE_URL", emu.url + "/v2")  # the SDK's environment override
        client = telnyx.Telnyx(api_key="test-key", max_retries=0)
        with pytest.raises(telnyx.RateLimitError) as limited:
            await asyncio.to_thread(client.messages.send, from_="+15550100", to="+15550111", text="Hi")
        assert limited.value.status_code == 429 and limited.value.body["errors"][0]["code"] == "10011"
        with pytest.raises(telnyx.AuthenticationError):
            await asyncio.to_thread(telnyx.Telnyx(api_key="wrong", max_retries=0).balance.retrieve)
