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

pytestmark = pytest.mark.slow  # piper speaks the reply, pocketsphinx listens to it


def carriers_table(twilio_url: str) -> str:
    return f"""version: 1
providers:
  tw: {{type: twilio, kind: call, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: "${{TW_TOKEN}}",
        from: "+15550199", base_url: "{twilio_url}"}}
defaults:
  call: [tw]
"""


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
    logs = list(server.out.glob("*.events.jsonl"))
    assert len(logs) == 1 and sid in logs[0].name
