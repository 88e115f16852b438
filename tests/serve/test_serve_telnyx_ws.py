"""Telnyx (signed TeXML webhook, bidirectional PCMU stream) and the generic /v1/sessions protocol,
against a real `serve` process."""

from __future__ import annotations

import base64
import time
from urllib.parse import urlencode

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from serve_helpers import HEARD, KEY, SAMPLES, cloud_table, serve

from voicerouter.load import Target, load_fixture, place_call, run_load
from voicerouter.testing import emulate
from voicerouter.transports import telnyx


@pytest.fixture
async def emulators():
    async with emulate("deepgram", api_key=KEY, transcript=HEARD) as dg, emulate("cartesia", api_key=KEY) as ca:
        yield dg, ca


async def test_telnyx_call_is_signed_streamed_and_answered(tmp_path, emulators):
    dg, ca = emulators
    private = Ed25519PrivateKey.generate()
    public = base64.b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    async with serve(tmp_path, cloud_table(dg.url, ca.url), env={"TELNYX_PUBLIC_KEY": public}) as server, \
            aiohttp.ClientSession() as http:
        body = urlencode(telnyx.call_params("v3:abc", "+15550100123", "+15559990000")).encode()
        stamp = int(time.time())
        headers = {"Content-Type": "application/x-www-form-urlencoded", telnyx.TIMESTAMP_HEADER: str(stamp),
                   telnyx.SIGNATURE_HEADER: telnyx.sign(Ed25519PrivateKey.generate(), body, stamp)}
        async with http.post(server.url + "/telnyx/voice", data=body, headers=headers) as r:
            assert r.status == 403
        target = Target(server.url, "telnyx", to="+15550100123", telnyx_private_key=private)
        result = await place_call(http, target, load_fixture(SAMPLES / "hello.wav"))
        assert result.outcome == "answered", result.error
        assert len(result.heard) / 2 / 8000 > 0.5 and result.marks_echoed >= 1 and len(result.latencies_s) == 1
    events = (server.out / f"{result.call_id.replace(':', '_')}.events.jsonl").read_text()
    assert '"route": "acme"' in events and '"type": "tts_first_audio"' in events


async def test_generic_websocket_sessions_stream_events_and_audio(tmp_path, emulators):
    dg, ca = emulators
    async with serve(tmp_path, cloud_table(dg.url, ca.url)) as server:
        target = Target(server.url, "ws", tenant="acme")
        report = await run_load(target, [load_fixture(SAMPLES / "hello.wav")], calls=2, concurrency=2, transcribe=False)
    assert report.count("answered") == 2, [c.error for c in report.calls]
    for call in report.calls:
        assert call.rate == 16000 and len(call.heard) / 2 / 16000 > 0.5
        finals = [e["text"] for e in call.events if e["type"] == "final_transcript"]
        replies = [e["text"] for e in call.events if e["type"] == "agent_reply"]
        assert finals and set(finals) == {HEARD} and set(replies) == {f"You said: {HEARD}."}
        assert {e["route"] for e in call.events} == {"acme"}
    assert report.failovers == 0 and len(report.latencies()) >= 2


async def test_websocket_rejects_a_bad_rate(tmp_path, emulators):
    dg, ca = emulators
    async with serve(tmp_path, cloud_table(dg.url, ca.url)) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url + "/v1/sessions?rate=abc") as r:
            assert r.status == 400 and "rate" in await r.text()
