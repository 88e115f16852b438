"""A full outbound call, offline: `voicerouter call --serve` places it through the emulated Twilio, which
fetches serve's voice webhook (signed), connects the media stream and speaks as the callee; serve's
session answers with a spoken reply that the callee hears."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import numpy as np
import pytest
from serve_helpers import HEARD, KEY, SAMPLES, TOKEN, cloud_table, serve

from voicerouter.testing.server import emulate
from voicerouter.testing.twilio import CALLS


def carriers_table(twilio_url: str) -> str:
    return f"""version: 1
providers:
  tw: {{type: twilio, kind: call, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: "${{TW_TOKEN}}",
        from: "+15550199", base_url: "{twilio_url}"}}
defaults:
  call: [tw]
"""


@pytest.mark.slow  # piper speaks the reply, pocketsphinx listens to it
async def test_voicerouter_call_serve_is_answered_with_a_spoken_reply(tmp_path):
    async with (
        emulate("deepgram", api_key=KEY, transcript=HEARD) as dg,
        emulate("cartesia", api_key=KEY, tts_engine="piper") as ca,
        emulate("twilio", api_key=TOKEN, callee_wav=str(SAMPLES / "hello.wav")) as tw,
        serve(tmp_path, cloud_table(dg.url, ca.url)) as server,
    ):
        routes = tmp_path / "carriers.yaml"
        routes.write_text(carriers_table(tw.url))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicerouter", "call", "+15550100123", "--tenant", "acme", "--serve", server.url,
            "--routes", str(routes), "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "TW_TOKEN": TOKEN},
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, stderr.decode()
        outcome = json.loads(stdout)
        assert outcome["carrier"] == "tw" and outcome["result"]["id"].startswith("CA") and outcome["failovers"] == 0
        calls = tw.app[CALLS]
        await calls.settle(90)
        sid = outcome["result"]["id"]
        call = calls.calls[sid]
        assert call["status"] == "completed" and call.get("verb") == "stream", call
        callee = calls.results[sid]
        assert callee.outcome == "answered", callee.error
        reply = np.frombuffer(bytes(callee.heard), dtype="<i2")
        assert len(reply) / callee.rate > 1.0 and callee.latencies_s, callee  # the reply came after the callee spoke
        from voicerouter.providers.local.pocketsphinx import transcribe_pcm

        heard = set((await asyncio.to_thread(transcribe_pcm, bytes(callee.heard), callee.rate)).split())
        assert len(heard & set(HEARD.split())) >= 2, heard  # the echo agent said the transcript back
    logs = sorted(server.out.glob("*.events.jsonl"))
    assert [p.name for p in logs] == [f"{sid}.events.jsonl", "carrier-status.events.jsonl"]
    statuses = [json.loads(line) for line in logs[1].read_text().splitlines()]
    assert [(e["session_id"], e["provider"], e["route"], e["status"]) for e in statuses if e["final"]] == [
        (sid, "tw", "defaults", "completed")]  # the call's own status callbacks, signed, recorded by serve


async def test_status_callbacks_are_signed_recorded_and_reported(tmp_path):
    import aiohttp

    from voicerouter import place_call, send_sms
    from voicerouter.config.loader import parse_routes
    from voicerouter.resilience import parse_faults
    from voicerouter.testing.telnyx import CALLS as TELNYX_CALLS
    from voicerouter.testing.telnyx import public_key

    async with emulate("twilio", api_key=TOKEN) as tw, emulate("telnyx", api_key=KEY) as tx:
        async with serve(tmp_path, cloud_table("http://127.0.0.1:9", "http://127.0.0.1:9"),
                         env={"TELNYX_PUBLIC_KEY": public_key(tx.app)}) as server:
            table = parse_routes(f"""version: 1
providers:
  tw-sms: {{type: twilio, kind: sms, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: "${{TW}}",
            from: "+15550199", base_url: "{tw.url}"}}
  tx-sms: {{type: telnyx, kind: sms, api_key: "${{TX}}", from: "+15550198", base_url: "{tx.url}/v2"}}
  tw-call: {{type: twilio, kind: call, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: "${{TW}}",
             from: "+15550199", base_url: "{tw.url}"}}
defaults:
  sms: [tw-sms, tx-sms]
  call: [tw-call]
routes:
  - name: acme-alerts
    match: {{tenant: acme}}
""", env={"TW": TOKEN, "TX": KEY})
            env = {"TW": TOKEN, "TX": KEY}
            first = await send_sms(table, "+15550111", "one", tenant="acme", serve_url=server.url, env=env)
            second = await send_sms(table, "+15550112", "two", tenant="acme", serve_url=server.url, env=env,
                                    faults=parse_faults("tw-sms=error:503"))
            call = await place_call(table, "+15550113", tenant="acme", twiml="<Response><Say>hi</Say></Response>",
                                    status_callback=f"{server.url}/twilio/status?route=acme-alerts&carrier=tw-call",
                                    env=env)
            assert first.result.carrier == "tw-sms" and second.result.carrier == "tx-sms" and call.ok
            await tw.app[CALLS].settle(10)
            await tx.app[TELNYX_CALLS].settle(10)
            async with aiohttp.ClientSession() as http:  # an unsigned callback is refused
                async with http.post(server.url + "/twilio/status", data={"CallSid": "CA1", "CallStatus": "completed"}) as r:
                    assert r.status == 403
        log = server.out / "carrier-status.events.jsonl"
        events = [json.loads(line) for line in log.read_text().splitlines()]
        assert {(e["provider"], e["kind"], e["status"]) for e in events if e["final"]} == {
            ("tw-sms", "sms", "delivered"), ("tx-sms", "sms", "delivered"), ("tw-call", "call", "completed")}
        assert all(e["route"] == "acme-alerts" and e["tenant"] in ("acme", None) for e in events)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voicerouter", "report", str(log), "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, stderr.decode()
        rows = {(r["carrier"], r["kind"]): r for r in json.loads(stdout)["deliveries"]}
        assert rows[("tw-sms", "sms")]["statuses"] == {"delivered": 1} and rows[("tw-sms", "sms")]["route"] == "acme-alerts"
        assert rows[("tx-sms", "sms")]["statuses"] == {"delivered": 1}
        assert rows[("tw-call", "call")]["statuses"] == {"completed": 1}
