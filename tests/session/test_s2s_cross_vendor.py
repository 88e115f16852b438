"""S2S failover across vendors in a replayed call: OpenAI Realtime drops mid-reply, Gemini Live takes over
with the conversation (replayed as Live `clientContent` turns) and the user's whole turn, and the reply
restarts once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voicerouter.config.loader import parse_routes
from voicerouter.routing.plan import RouteContext
from voicerouter.session.replay import replay_files
from voicerouter.testing.server import emulate

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
KEY = "sk-cross-vendor-0123456789"
SAID = "what is the weather today"



def table(rt_url: str, gem_url: str):
    return parse_routes(
        f"""
version: 1
providers:
  rt:  {{type: openai-realtime, api_key: "${{RT_KEY}}", base_url: "{rt_url}/v1"}}
  gem: {{type: gemini-live, api_key: "${{GEM_KEY}}", base_url: "{gem_url}"}}
defaults:
  pipeline: s2s
  s2s: [rt, gem]
  instructions: Answer briefly.
  resilience: {{retries: 0, first_result_timeout_ms: 3000, stall_timeout_ms: 2000, turn_deadline_ms: 20000}}
routes:
  - name: voice
    match: {{tenant: acme}}
""",
        name="cross.yaml",
    )


async def replay(tmp_path: Path, rt_faults: str):
    async with emulate("openai-realtime", api_key=KEY, transcript=SAID, faults=rt_faults) as rt, \
            emulate("gemini-live", api_key=KEY, transcript=SAID) as gem:
        (result,) = await replay_files([SAMPLES / "two_turns_8k.wav"], RouteContext(tenant="acme", session_id="c1"),
                                       table(rt.url, gem.url), out_dir=tmp_path, env={"RT_KEY": KEY, "GEM_KEY": KEY})
    events = [json.loads(line) for line in Path(result.events_jsonl).read_text().splitlines()]
    return result, events, rt.state, gem.state


def committed(rt_state) -> list[float]:
    return [r["audio_s"] for r in rt_state.requests if r.get("event") == "input_audio_buffer.commit"]


def heard(gem_state) -> list[float]:
    return [m["audio_s"] for r in gem_state.requests for m in r["messages"] if "audio_s" in m]


async def test_drop_mid_reply_fails_over_to_gemini_without_losing_the_turn(tmp_path):
    result, events, rt, gem = await replay(tmp_path, "drop")
    session = result.session
    assert result.ok and [t.transcript for t in session.turns] == [SAID, SAID]
    assert [t.reply for t in session.turns] == [f"You said: {SAID}"] * 2
    assert [t.tts_provider for t in session.turns] == ["gem", "gem"]
    (failover,) = [e for e in events if e["type"] == "failover"]
    assert failover["from_provider"] == "rt" and failover["to_provider"] == "gem" and failover["restarted_reply"]
    # No lost user words: Gemini heard the whole first turn OpenAI had committed, then the second turn.
    assert len(committed(rt)) == 1 and heard(gem)[0] == pytest.approx(committed(rt)[0], abs=0.02)
    assert len(heard(gem)) == 2
    assert [m["role"] for m in session_messages(result)] == ["user", "assistant", "user", "assistant"]


async def test_a_later_failover_replays_the_conversation_in_gemini_format(tmp_path):
    # The first reply (and the connection's own fault draw) go through; the second reply is cut.
    result, events, rt, gem = await replay(tmp_path, "slow:1ms*2,drop*1")
    assert result.ok and [t.tts_provider for t in result.session.turns] == ["rt", "gem"]
    assert [t.reply for t in result.session.turns] == [f"You said: {SAID}"] * 2
    (failover,) = [e for e in events if e["type"] == "failover"]
    assert failover["restarted_reply"] and failover["to_provider"] == "gem"
    messages = gem.requests[0]["messages"]
    assert messages[0]["setup"]["systemInstruction"]["parts"] == [{"text": "Answer briefly."}]
    assert messages[1] == {"clientContent": {"turnComplete": False, "turns": [
        {"role": "user", "parts": [{"text": SAID}]},
        {"role": "model", "parts": [{"text": f"You said: {SAID}"}]}]}}
    assert heard(gem) == [pytest.approx(committed(rt)[1], abs=0.02)]


def session_messages(result) -> list[dict]:
    return [{"role": t, "text": x} for turn in result.session.turns
            for t, x in (("user", turn.transcript), ("assistant", turn.reply))]
