"""Real speech over a Twilio-protocol call on the local engines: a spoken reply the caller can
understand, and barge-in: the caller talking over the reply gets a `clear` at once."""

from __future__ import annotations

import json

import aiohttp
import numpy as np
import pytest
from serve_helpers import LOCAL_TABLE, SAMPLES, TOKEN, serve

from voicerouter.load import CallPlan, Target, load_fixture, place_call
from voicerouter.providers.local.pocketsphinx import transcribe_pcm

pytestmark = pytest.mark.slow


async def test_spoken_reply_is_heard_and_barge_in_clears_within_200_ms(tmp_path):
    hello = load_fixture(SAMPLES / "hello.wav")
    async with serve(tmp_path, LOCAL_TABLE) as server, aiohttp.ClientSession() as http:
        target = Target(server.url, "twilio", tenant="acme", twilio_auth_token=TOKEN)
        plan = CallPlan(hello.pcm, listen_s=60)
        result = await place_call(http, target, plan)
        assert result.outcome == "answered", result.error
        reply = np.frombuffer(bytes(result.heard), dtype="<i2").astype(float)
        assert len(reply) / 8000 > 1.0 and np.sqrt(np.mean(reply**2)) > 300
        # The echo agent says "You said: <transcript>."; Piper speaks it, mu-law carries it, and
        # PocketSphinx on the caller's side must recognise words of it.
        heard = set(transcribe_pcm(bytes(result.heard), 8000).split())
        assert heard & {"you", "said", "good", "morning", "order"}, heard

        barge = CallPlan(hello.pcm, barge=hello.pcm, barge_after_s=0.3, listen_s=60)
        interrupted = await place_call(http, target, barge, 1)
        assert interrupted.outcome == "answered", interrupted.error
        assert interrupted.clears >= 1 and interrupted.clear_after_barge_s is not None
    # Within 200 ms of the caller's speech start, on the caller's audio clock: the clear went out
    # when the server had heard that much of the new speech (wall-clock time on a shared machine
    # is the bench's business, not a test's).
    log = server.out / f"{interrupted.call_id}.events.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    barge = next(e for e in events if e["type"] == "barge_in")
    start = max(e["audio_s"] for e in events if e["type"] == "speech_start" and e["audio_s"] <= barge["audio_s"])
    assert 0 < barge["audio_s"] - start < 0.2, (start, barge)
