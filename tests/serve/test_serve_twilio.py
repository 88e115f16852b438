"""`voicerouter serve` as a real process, driven like Twilio drives it: signed webhooks, TwiML,
Media Streams over loopback WebSockets; capacity refusal, drain on SIGTERM, metrics and logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import HEARD, KEY, SAMPLES, TOKEN, cloud_table, serve, twilio_target

from voicerouter.load import CallPlan, load_fixture, place_call
from voicerouter.testing import emulate
from voicerouter.transports import twilio


@pytest.fixture
async def emulators():
    async with emulate("deepgram", api_key=KEY, transcript=HEARD) as dg, emulate("cartesia", api_key=KEY) as ca:
        yield dg, ca


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def wait_active(http: aiohttp.ClientSession, url: str, count: int) -> None:
    async with asyncio.timeout(30):
        while (await get_json(http, url + "/status"))[1]["sessions"]["active"] < count:
            await asyncio.sleep(0.1)


def long_plan(seconds: float = 6.0) -> CallPlan:
    fixture = load_fixture(SAMPLES / "hello.wav")
    return CallPlan(fixture.pcm + bytes(int(16000 * seconds) * 2), listen_s=8)


async def test_webhook_signature_and_twiml(tmp_path, emulators):
    dg, ca = emulators
    async with serve(tmp_path, cloud_table(dg.url, ca.url)) as server, aiohttp.ClientSession() as http:
        url = server.url + "/twilio/voice"
        form = twilio.call_params("CA123", "+15550100123", "+15559990000")
        async with http.post(url, data=form, headers={twilio.SIGNATURE_HEADER: "bm90LXRoZS1zaWduYXR1cmU="}) as r:
            assert r.status == 403
        async with http.post(url, data=form) as r:
            assert r.status == 403
        tampered = {**form, "To": "+15550100999"}
        async with http.post(url, data=tampered, headers={twilio.SIGNATURE_HEADER: twilio.signature(TOKEN, url, form)}) as r:
            assert r.status == 403
        async with http.post(url, data=form, headers={twilio.SIGNATURE_HEADER: twilio.signature(TOKEN, url, form)}) as r:
            assert r.status == 200 and r.content_type == "application/xml"
            verb, info = twilio.parse_twiml(await r.text())
        assert verb == "stream" and info["url"] == server.url.replace("http://", "ws://") + "/twilio/media"
        assert info["parameters"] == {"tenant": "acme", "region": "us-east-1", "to": "+15550100123"}
        # A media stream for a call no webhook answered is closed, not served.
        async with http.ws_connect(info["url"]) as ws:
            carrier = twilio.TwilioCarrier("CA-unknown", "MZ1")
            for message in carrier.opening({"tenant": "acme"}):
                await ws.send_str(message)
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008 and "webhook" in msg.extra
    assert TOKEN not in "".join(server.stderr)


async def test_twilio_endpoints_off_without_auth_token(tmp_path, emulators):
    dg, ca = emulators
    async with serve(tmp_path, cloud_table(dg.url, ca.url), env={"TWILIO_AUTH_TOKEN": ""}) as server:
        async with aiohttp.ClientSession() as http:
            async with http.post(server.url + "/twilio/voice", data={"CallSid": "CA1"}) as r:
                assert r.status == 404 and "TWILIO_AUTH_TOKEN" in await r.text()
            status, data = await get_json(http, server.url + "/status")
            assert data["carriers"]["twilio"] == "off"


async def test_call_gets_reply_metrics_and_event_log(tmp_path, emulators):
    dg, ca = emulators
    async with serve(tmp_path, cloud_table(dg.url, ca.url)) as server, aiohttp.ClientSession() as http:
        target = twilio_target(server)
        result = await place_call(http, target, load_fixture(SAMPLES / "hello.wav"))
        assert result.outcome == "answered", result.error
        reply = np.frombuffer(bytes(result.heard), dtype="<i2").astype(float)
        assert len(reply) / 8000 > 0.5 and np.sqrt(np.mean(reply**2)) > 500  # the emulated voice, decoded from mu-law
        assert result.marks_echoed >= 1 and len(result.latencies_s) == 1
        async with http.get(server.url + "/metrics") as r:
            text = await r.text()
        assert metric(text, "voicerouter_sessions_started_total", transport="twilio", route="acme", tenant="acme") == 1
        assert metric(text, "voicerouter_turns_total", route="acme") >= 1
        assert metric(text, "voicerouter_turn_first_audio_seconds_count", route="acme") >= 1
        assert metric(text, "voicerouter_sessions_active") == 0
        assert (await get_json(http, server.url + "/healthz"))[0] == 200
    logs = list(server.out.glob("*.events.jsonl"))
    assert [p.name for p in logs] == [f"{result.call_id}.events.jsonl"]
    events = [json.loads(line) for line in logs[0].read_text().splitlines()]
    assert {"session_start", "final_transcript", "tts_first_audio", "session_end"} <= {e["type"] for e in events}
    report = subprocess.run([sys.executable, "-m", "voicerouter", "report", str(server.out), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    assert KEY not in report.stdout and KEY not in logs[0].read_text()


async def test_capacity_refusal_at_n_plus_one(tmp_path, emulators):
    dg, ca = emulators
    async with serve(tmp_path, cloud_table(dg.url, ca.url), "--max-sessions", "2") as server, \
            aiohttp.ClientSession() as http:
        target = twilio_target(server)
        held = [asyncio.create_task(place_call(http, target, long_plan(), i)) for i in range(2)]
        await wait_active(http, server.url, 2)
        assert (await get_json(http, server.url + "/readyz"))[0] == 503
        third = await place_call(http, target, long_plan(), 2)
        assert third.outcome == "refused"
        first, second = await asyncio.gather(*held)
        assert first.outcome == second.outcome == "answered"
        async with http.get(server.url + "/metrics") as r:
            text = await r.text()
        assert metric(text, "voicerouter_sessions_refused_total", reason="capacity") == 1
        assert (await get_json(http, server.url + "/readyz"))[0] == 200
    refused = [json.loads(line) for line in (server.out / f"{third.call_id}.events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in refused] == ["refused"] and refused[0]["reason"] == "capacity"


async def test_drain_on_sigterm_lets_the_live_call_finish(tmp_path, emulators):
    dg, ca = emulators
    async with serve(tmp_path, cloud_table(dg.url, ca.url), "--drain-timeout", "30") as server, \
            aiohttp.ClientSession() as http:
        target = twilio_target(server)
        live = asyncio.create_task(place_call(http, target, long_plan(3.0)))
        await wait_active(http, server.url, 1)
        server.signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            while (await get_json(http, server.url + "/readyz"))[0] != 503:
                await asyncio.sleep(0.05)
        assert (await get_json(http, server.url + "/readyz"))[1]["reason"] == "draining"
        late = await place_call(http, target, long_plan(), 1)
        assert late.outcome == "refused"
        result = await live
        assert result.outcome == "answered" and result.heard
        assert await server.wait() == 0
    assert any("stopped" in line for line in server.stderr)


async def test_second_sigterm_exits_at_once(tmp_path, emulators):
    dg, ca = emulators
    async with serve(tmp_path, cloud_table(dg.url, ca.url), "--drain-timeout", "120") as server, \
            aiohttp.ClientSession() as http:
        target = twilio_target(server)
        live = asyncio.create_task(place_call(http, target, long_plan(20.0)))
        await wait_active(http, server.url, 1)
        server.signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        server.signal(signal.SIGTERM)
        assert await server.wait(timeout=10) == 130
        result = await live
        assert result.outcome in ("answered", "failed")


async def test_not_ready_when_no_provider_of_a_route_can_be_built(tmp_path, emulators):
    dg, ca = emulators
    async with serve(tmp_path, cloud_table(dg.url, ca.url), env={"CA_KEY": ""}) as server, \
            aiohttp.ClientSession() as http:
        status, body = await get_json(http, server.url + "/readyz")
        assert status == 503 and "tts" in body["reason"]
        _, data = await get_json(http, server.url + "/status")
        assert "CA_KEY" in data["unbuildable_providers"]["cart"] and KEY not in json.dumps(data)
    assert any("cart" in line and "CA_KEY" in line for line in server.stderr)


async def test_late_websocket_over_capacity_is_closed_with_1013(tmp_path, emulators):
    dg, ca = emulators
    async with serve(tmp_path, cloud_table(dg.url, ca.url), "--max-sessions", "1") as server, \
            aiohttp.ClientSession() as http:
        target = twilio_target(server)
        held = asyncio.create_task(place_call(http, target, long_plan()))
        await wait_active(http, server.url, 1)
        ws_url = server.url.replace("http://", "ws://") + "/v1/sessions?tenant=acme"
        async with http.ws_connect(ws_url) as ws:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1013 and "capacity" in msg.extra
        assert (await held).outcome == "answered"


async def test_drain_timeout_ends_the_calls_still_live(tmp_path, emulators):
    dg, ca = emulators
    async with serve(tmp_path, cloud_table(dg.url, ca.url), "--drain-timeout", "1") as server, \
            aiohttp.ClientSession() as http:
        target = twilio_target(server)
        live = asyncio.create_task(place_call(http, target, long_plan(30.0)))
        await wait_active(http, server.url, 1)
        server.signal(signal.SIGTERM)
        result = await live
        assert result.close_code == 1001  # going away: the server ended the call
        assert await server.wait() == 0
    assert any("1 call(s) ended at the drain timeout" in line for line in server.stderr)
    log = (server.out / f"{result.call_id}.events.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["type"] == "session_end" and json.loads(log[-1])["reason"] == "stopped"


async def test_load_command_reports_calls_as_json(tmp_path, emulators):
    dg, ca = emulators
    async with serve(tmp_path, cloud_table(dg.url, ca.url), "--max-sessions", "2") as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicerouter", "load", server.url, str(SAMPLES / "hello.wav"), "--calls", "3",
            "--concurrency", "3", "--to", "+15550100123", "--json", "--no-transcribe",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "TWILIO_AUTH_TOKEN": TOKEN},
        )
        async with asyncio.timeout(120):
            stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()  # refusals are reported, not failures
    report = json.loads(stdout)
    assert (report["calls"], report["answered"], report["refused"], report["failed"]) == (3, 2, 1, 0)
    assert report["failovers"] == 0 and report["first_audio_s"]["p50"] is not None
    assert TOKEN not in stdout.decode() + stderr.decode()
