"""A sample replayed through a route of emulated cloud providers only, over real HTTP/WebSocket on loopback."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import soundfile as sf

from voicerouter.config.loader import parse_routes
from voicerouter.routing.plan import RouteContext
from voicerouter.session.replay import replay_files
from voicerouter.testing import emulate

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
KEY = "sk-cloud-route-canary-42"
HEARD = "i would like to pay my bill today"



def cloud_table(urls: dict[str, str]):
    return parse_routes(
        f"""
version: 1
providers:
  dg:      {{type: deepgram, kind: stt, model: nova-3, api_key: "${{DG_KEY}}", base_url: "{urls['deepgram']}"}}
  az-stt:  {{type: azure, kind: stt, region: westeurope, api_key: "${{AZ_KEY}}", base_url: "{urls['azure']}"}}
  cart:    {{type: cartesia, voice: v-1, api_key: "${{CA_KEY}}", base_url: "{urls['cartesia']}"}}
  el:      {{type: elevenlabs, kind: tts, voice: 21m00Tcm4TlvDq8ikWAM, api_key: "${{EL_KEY}}", base_url: "{urls['elevenlabs']}"}}
defaults:
  stt: [dg, az-stt]
  tts: [cart, el]
  resilience: {{retries: 0, first_result_timeout_ms: 3000}}
routes:
  - name: cloud
    match: {{tenant: acme}}
""",
        name="cloud.yaml",
    )


@pytest.mark.parametrize("faulty", [False, True], ids=["healthy", "primaries-failing"])
async def test_two_turn_replay_on_emulated_cloud_providers(tmp_path, faulty):
    faults = {"deepgram": "error:503", "cartesia": "error:500"} if faulty else {}
    env = {"DG_KEY": KEY, "AZ_KEY": KEY, "CA_KEY": KEY, "EL_KEY": KEY}
    async with AsyncExitStack() as stack:
        emus = {
            kind: await stack.enter_async_context(emulate(kind, api_key=KEY, transcript=HEARD, faults=faults.get(kind)))
            for kind in ("deepgram", "azure", "cartesia", "elevenlabs")
        }
        table = cloud_table({kind: emu.url for kind, emu in emus.items()})
        (result,) = await replay_files(
            [SAMPLES / "two_turns_8k.wav"], RouteContext(tenant="acme", session_id="cloud-1"), table,
            out_dir=tmp_path, env=env,
        )

    assert result.ok, result.error
    turns = result.session.turns
    assert [t.transcript for t in turns] == [HEARD, HEARD]
    assert all(t.reply == f"You said: {HEARD}." for t in turns)
    assert [t.stt_provider for t in turns] == (["az-stt"] * 2 if faulty else ["dg"] * 2)
    assert [t.tts_provider for t in turns] == (["el"] * 2 if faulty else ["cart"] * 2)
    assert all(t.reply_audio_s > 0.5 for t in turns)
    info = sf.info(result.reply_wav)
    assert info.frames / info.samplerate == pytest.approx(sum(t.reply_audio_s for t in turns), abs=0.05)

    log = Path(result.events_jsonl).read_text()
    events = [json.loads(line) for line in log.splitlines()]
    failovers = [(e["stage"], e["from_provider"], e["to_provider"]) for e in events if e["type"] == "failover"]
    if faulty:
        assert ("stt", "dg", "az-stt") in failovers and ("tts", "cart", "el") in failovers
    else:
        assert failovers == []
    assert KEY not in log
    # The emulators saw the vendors' real requests, authenticated with the key from the environment.
    assert bool(emus["azure"].state.requests) is faulty and emus["deepgram"].state.requests
