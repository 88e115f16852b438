"""Keypad digits (DTMF) through a real `serve` process: Twilio and Telnyx `dtmf` messages and the
/v1/sessions `{"type": "dtmf"}` message become events, metrics, a barge-in and a user turn."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import HEARD, KEY, SAMPLES, cloud_table, serve, twilio_target

from voicerouter.audio.convert import resample
from voicerouter.load import CallPlan, Target, load_fixture, place_call
from voicerouter.testing import emulate
from voicerouter.transports.websocket import AppClient


@pytest.fixture
async def emulators():
    async with emulate("deepgram", api_key=KEY, transcript=HEARD) as dg, emulate("cartesia", api_key=KEY) as ca:
        yield dg, ca


def metric(text: str, name: str, **labels: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def events_of(server, call_id: str) -> list[dict]:
    path = server.out / f"{call_id.replace(':', '_')}.events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def with_dtmf(table: str, settings: str) -> str:
    """The table with `dtmf:` settings in its defaults."""
    return table.replace("\nroutes:\n", f"\n  dtmf: {settings}\nroutes:\n", 1)


def silence(seconds: float) -> bytes:
    return bytes(int(16000 * seconds) * 2)


async def test_twilio_keys_until_hash_are_a_user_turn(tmp_path, emulators):
    dg, ca = emulators
    async with serve(tmp_path, cloud_table(dg.url, ca.url)) as server, aiohttp.ClientSession() as http:
        target = twilio_target(server)
        plan = CallPlan(silence(1.0), listen_s=10, dtmf=[(None, "12#")])
        result = await place_call(http, target, plan)
        assert result.outcome == "answered", result.error
        assert result.keys_sent == "12#" and len(result.latencies_s) == 1 and len(result.heard) / 2 / 8000 > 0.3
        async with http.get(server.url + "/metrics") as r:
            text = await r.text()
    events = events_of(server, result.call_id)
    keys = [e for e in events if e["type"] == "dtmf"]
    assert [e["digit"] for e in keys] == ["1", "2", "#"]
    # On the audio clock: the keys were pressed 0.5 s after the 1 s of audio, 0.25 s apart.
    assert [round(e["audio_s"], 1) for e in keys] == pytest.approx([1.5, 1.75, 2.0], abs=0.11)
    (turn,) = [e for e in events if e["type"] == "turn_end"]
    assert (turn["reason"], turn["digits"], turn["ended_by"], turn["text"]) == ("dtmf", "12", "terminator", "12")
    assert [e["text"] for e in events if e["type"] == "agent_reply"] == ["You said: 12."]
    assert not [e for e in events if e["type"] == "final_transcript"]  # no speech, so no STT
    assert metric(text, "voicerouter_dtmf_digits_total", route="acme", tenant="acme") == 3
    assert metric(text, "voicerouter_keypad_turns_total", route="acme", ended_by="terminator") == 1
    report = subprocess.run([sys.executable, "-m", "voicerouter", "report", str(server.out), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    (turn_row,) = [t for t in json.loads(report.stdout)["turns"] if t["session_id"] == result.call_id]
    assert (turn_row["transcript"], turn_row["reply"]) == ("12", "You said: 12.")


async def test_telnyx_entry_ends_after_the_inter_digit_timeout(tmp_path, emulators):
    dg, ca = emulators
    private = Ed25519PrivateKey.generate()
    public = base64.b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    table = with_dtmf(cloud_table(dg.url, ca.url), '{inter_digit_timeout_ms: 600, text: "Keypad: {digits}"}')
    async with serve(tmp_path, table, env={"TELNYX_PUBLIC_KEY": public}) as server, aiohttp.ClientSession() as http:
        target = Target(server.url, "telnyx", to="+15550100123", telnyx_private_key=private)
        result = await place_call(http, target, CallPlan(silence(0.5), listen_s=10, dtmf=[(0.2, "07")]))
        assert result.outcome == "answered", result.error
        assert result.keys_sent == "07" and result.heard
    events = events_of(server, result.call_id)
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["0", "7"]
    (turn,) = [e for e in events if e["type"] == "turn_end"]
    assert (turn["digits"], turn["ended_by"]) == ("07", "timeout")
    assert turn["delay_ms"] >= 600  # the entry ended once 600 ms of the caller's audio passed after the last key
    assert [e["text"] for e in events if e["type"] == "agent_reply"] == ["You said: Keypad: 07."]


async def test_app_keypress_stops_the_reply_and_clears(tmp_path, emulators):
    dg, ca = emulators
    table = with_dtmf(cloud_table(dg.url, ca.url), "{collect: false}")
    async with serve(tmp_path, table) as server, aiohttp.ClientSession() as http:
        speech = resample(load_fixture(SAMPLES / "hello.wav").pcm, 16000, 16000)
        client = AppClient()
        url = server.url.replace("http://", "ws://") + "/v1/sessions?tenant=acme&session_id=keys-1"
        got: list[tuple[str, object]] = []
        async with http.ws_connect(url) as ws:

            async def talk() -> None:
                for i in range(0, len(speech) + 16000 * 6 * 2, 640):  # the speech, then silence, in 20 ms
                    await ws.send_bytes(client.media((speech[i : i + 640]).ljust(640, b"\0")))
                    await asyncio.sleep(0.02)

            talker = asyncio.create_task(talk())
            pressed = False
            async with asyncio.timeout(60):
                while not any(k == "event" and v.get("type") == "barge_in" for k, v in got):
                    msg = await ws.receive()
                    assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
                    kind, value = client.reply(msg.data)
                    got.append((kind, value))
                    if kind == "media" and not pressed:
                        await ws.send_str(client.dtmf("5"))
                        pressed = True
            talker.cancel()
            await ws.send_str(client.stop())
        kinds = [k for k, _ in got]
        assert "clear" in kinds[kinds.index("media"):]
        event_list = [v for k, v in got if k == "event"]
        (key,) = [e for e in event_list if e["type"] == "dtmf"]
        (barge,) = [e for e in event_list if e["type"] == "barge_in"]
        assert key["digit"] == "5" and barge["cause"] == "dtmf" and barge["digit"] == "5" and barge["turn"] == 1
        async with http.get(server.url + "/metrics") as r:
            text = await r.text()
    assert metric(text, "voicerouter_barge_ins_total", route="acme", cause="dtmf") == 1
    assert metric(text, "voicerouter_keypad_turns_total") == 0  # collect: false


async def test_masked_keys_stay_out_of_the_log_but_reach_the_agent(tmp_path, emulators):
    dg, ca = emulators
    table = with_dtmf(cloud_table(dg.url, ca.url), "{mask: true, max_digits: 4, terminator: null}")
    async with serve(tmp_path, table) as server, aiohttp.ClientSession() as http:
        target = twilio_target(server)
        result = await place_call(http, target, CallPlan(silence(0.5), listen_s=10, dtmf=[(None, "9731")]))
        assert result.outcome == "answered" and result.heard, result.error
    events = events_of(server, result.call_id)
    keys = [e for e in events if e["type"] == "dtmf"]
    assert len(keys) == 4 and all(e["digit"] is None and e["masked"] for e in keys)
    (turn,) = [e for e in events if e["type"] == "turn_end"]
    assert (turn["digits"], turn["text"], turn["keys"], turn["ended_by"]) == (None, None, 4, "max_digits")
    # The agent got the keys (the echo agent says them back: what an agent says is logged as said).
    assert [e["text"] for e in events if e["type"] == "agent_reply"] == ["You said: 9731."]
    assert "9731" not in json.dumps([e for e in events if e["type"] not in ("agent_reply", "tts_start")])
