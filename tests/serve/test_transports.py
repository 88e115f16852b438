"""The transports' conversions: mu-law, Twilio signatures and messages, Telnyx signatures and
reordering, and the call sink's marks (what was really played) and barge-in clear."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from voicerouter.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from voicerouter.providers.base import AudioChunk
from voicerouter.transports import telnyx, twilio
from voicerouter.transports.base import Audio, CallSink, CallSource, MarkEcho, Started, Stopped


def test_mulaw_round_trip_is_close():
    t = np.arange(8000) / 8000
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    back = np.frombuffer(ulaw_to_pcm16(pcm16_to_ulaw(pcm.tobytes())), dtype="<i2").astype(float)
    assert len(back) == len(pcm)
    assert np.max(np.abs(back - pcm)) < 8000 * 0.04  # mu-law keeps ~2 % relative error
    assert pcm16_to_ulaw(bytes(2)) == b"\xff"  # digital silence is 0xFF in mu-law


def test_twilio_signature_matches_the_documented_example():
    # The example of Twilio's "Validating requests" guide.
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234", "From": "+12349013030",
              "To": "+18005551212"}
    assert twilio.signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert twilio.signature_valid("12345", url, params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not twilio.signature_valid("12345", url, {**params, "Digits": "1235"}, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert twilio.signature_valid("12345", with_port, params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")


def test_twiml_connect_and_reject():
    xml = twilio.connect_stream_twiml("wss://example.com/twilio/media", {"tenant": "a&b", "flags": "beta=true"})
    assert twilio.parse_twiml(xml) == ("stream", {"url": "wss://example.com/twilio/media",
                                                  "parameters": {"tenant": "a&b", "flags": "beta=true"}})
    assert twilio.parse_twiml(twilio.reject_twiml()) == ("reject", {"reason": "busy"})


def test_twilio_media_messages_both_ways():
    carrier = twilio.TwilioCarrier("CA1", "MZ1")
    server = twilio.TwilioMedia()
    opening = [item for m in carrier.opening({"tenant": "acme"}) for item in server.decode(m)]
    assert opening == [Started("CA1", "MZ1", {"tenant": "acme"}, 8000)]
    pcm = (np.ones(160) * 1000).astype("<i2").tobytes()
    (audio,) = server.decode(carrier.media(pcm))
    assert isinstance(audio, Audio) and audio.sample_rate == 8000 and len(audio.pcm) == 320
    assert server.decode(carrier.mark("m1")) == [MarkEcho("m1")]
    assert server.decode(carrier.stop()) == [Stopped("hangup")]
    out = json.loads(server.encode_audio(pcm))
    assert out["event"] == "media" and out["streamSid"] == "MZ1" and len(base64.b64decode(out["media"]["payload"])) == 160
    assert carrier.reply(server.encode_clear()) == ("clear", {"event": "clear", "streamSid": "MZ1"})
    with pytest.raises(ValueError, match="unsupported media format"):
        bad = json.loads(carrier.opening({})[1])
        bad["start"]["mediaFormat"]["sampleRate"] = 16000
        server.decode(json.dumps(bad))


def test_telnyx_signature():
    private = Ed25519PrivateKey.generate()
    public = base64.b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    body = b"CallSid=v3%3Aabc&To=%2B15550100123"
    now = int(time.time())
    header = telnyx.sign(private, body, now)
    assert telnyx.signature_valid(public, body, header, str(now))
    assert not telnyx.signature_valid(public, body + b"x", header, str(now))
    assert not telnyx.signature_valid(public, body, header, str(now - 3600), now=now)  # a replay
    assert not telnyx.signature_valid(public, body, None, str(now))


def test_telnyx_frames_are_put_back_in_sequence_order():
    carrier = telnyx.TelnyxCarrier("cc-1", "st-1")
    server = telnyx.TelnyxMedia({"call": "v3:abc", "tenant": "acme"})
    opening = [item for m in carrier.opening({}) for item in server.decode(m)]
    assert opening == [Started("v3:abc", "st-1", {"tenant": "acme"}, 8000)]
    frames = [carrier.media(np.full(160, v * 100, dtype="<i2").tobytes()) for v in range(1, 5)]
    got = [server.decode(frames[i]) for i in (1, 0, 3, 2)]
    assert [len(g) for g in got] == [0, 2, 0, 2]
    levels = [int(np.frombuffer(a.pcm, dtype="<i2")[0]) for g in got for a in g]
    assert levels == sorted(levels)


async def test_call_sink_learns_what_was_played_from_marks():
    sent: list[str] = []
    sink = CallSink(twilio.TwilioMedia(), sent.append, grace_s=0.2)
    await sink.write(AudioChunk(bytes(16000 * 2), 16000))  # 1 s
    marks = [json.loads(m)["mark"]["name"] for m in sent if json.loads(m)["event"] == "mark"]
    media = [m for m in sent if json.loads(m)["event"] == "media"]
    # whole 20 ms frames in one message (the resampler holds a few ms back until drain), then a mark
    assert len(media) == 1 and len(marks) == 1 and json.loads(sent[-1])["event"] == "mark"
    payload = base64.b64decode(json.loads(media[0])["media"]["payload"])
    assert len(payload) % 160 == 0 and 0.9 <= len(payload) / 8000 <= 1.0
    assert sink.played_s == 0.0 and sink.sent_s == pytest.approx(len(payload) / 8000)
    sink.confirm(marks[0])
    assert sink.played_s == pytest.approx(sink.sent_s)
    played = sink.played_s
    await sink.write(AudioChunk(bytes(1600 * 2), 16000))  # 0.1 s more, then barge-in
    sink.clear()
    assert json.loads(sent[-1])["event"] == "clear"
    assert sink.played_s == played  # cleared audio never counts as played
    async with asyncio.timeout(2):
        await sink.drain()  # nothing outstanding after clear: returns at once


async def test_call_source_frames_at_16k():
    source = CallSource(frame_ms=20)
    source.push(bytes(8000 * 2), 8000)  # 1 s at 8 kHz
    source.end()
    frames = [f async for f in source.frames()]
    assert all(len(f) == 640 for f in frames) and 45 <= len(frames) <= 50
