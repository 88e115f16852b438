"""replay_files over a real WebSocket: the S2S pipeline against the OpenAI Realtime emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from voicerouter.config.loader import parse_routes
from voicerouter.errors import EXIT_FAILED, EXIT_OK, EXIT_PROVIDER
from voicerouter.routing.plan import RouteContext
from voicerouter.session.replay import exit_code, replay_files
from voicerouter.testing.server import emulate

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
KEY = "sk-replay-test-0123456789"



def s2s_table(url: str):
    return parse_routes(
        f"""
version: 1
providers:
  rt: {{type: openai-realtime, api_key: "${{RT_KEY}}", base_url: "{url}/v1"}}
defaults:
  pipeline: s2s
  s2s: [rt]
  instructions: Answer briefly.
routes:
  - name: voice-beta
    match: {{flags: {{s2s: true}}}}
""",
        name="s2s.yaml",
    )


async def test_s2s_replay_through_the_realtime_emulator(tmp_path):
    async with emulate("openai-realtime", api_key=KEY, transcript="what is the weather today") as emu:
        table = s2s_table(emu.url)
        ctx = RouteContext(tenant="acme", flags={"s2s": True}, session_id="call-7")
        results = await replay_files(
            [SAMPLES / "two_turns_8k.wav"], ctx, table, out_dir=tmp_path, env={"RT_KEY": KEY}
        )
    (result,) = results
    assert result.ok and result.route == "voice-beta" and result.session_id == "call-7"
    session = result.session
    assert session is not None and session.pipeline == "s2s"
    assert [t.transcript for t in session.turns] == ["what is the weather today"] * 2
    assert [t.reply for t in session.turns] == ["You said: what is the weather today"] * 2
    assert all(t.stt_provider == "rt" == t.tts_provider for t in session.turns)
    assert all("tts_first_audio" in t.latency_ms for t in session.turns)
    # The spoken replies were written to the WAV, and every event to the JSONL log.
    info = sf.info(result.reply_wav)
    assert info.frames / info.samplerate == pytest.approx(sum(t.reply_audio_s for t in session.turns), abs=0.05)
    assert info.frames > 0
    lines = [json.loads(line) for line in Path(result.events_jsonl).read_text().splitlines()]
    assert lines[0]["type"] == "session_start" and lines[-1]["type"] == "session_end"
    assert lines[0]["s2s"] == ["rt"] and lines[0]["session_id"] == "call-7"
    assert KEY not in Path(result.events_jsonl).read_text()
    doc = result.to_dict()
    assert {"file", "route", "session_id", "turns", "errors"} <= set(doc)
    assert set(doc["turns"][0]) >= {"turn", "start_s", "end_s", "transcript", "reply", "providers", "latency_ms"}
    assert doc["turns"][0]["providers"] == {"s2s": "rt"} and doc["ok"] is True


async def test_a_bad_file_is_an_error_entry_and_the_others_still_run(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(100))
    missing = tmp_path / "missing.wav"
    seen = []
    async with emulate("openai-realtime", api_key=KEY, transcript="hello") as emu:
        results = await replay_files(
            [bad, SAMPLES / "hello.wav", missing], RouteContext(flags={"s2s": True}, session_id="batch"),
            s2s_table(emu.url), concurrency=2, env={"RT_KEY": KEY}, on_progress=seen.append,
        )
    assert [r.file for r in results] == [str(bad), str(SAMPLES / "hello.wav"), str(missing)]
    assert [r.session_id for r in results] == ["batch-1", "batch-2", "batch-3"]
    broken, good, gone = results
    assert broken.exit_code == EXIT_FAILED and "broken.wav" in broken.error and broken.session is None
    assert gone.exit_code == EXIT_FAILED and "not found" in gone.error
    assert good.exit_code == EXIT_OK and [t.transcript for t in good.session.turns] == ["hello"]
    assert exit_code(results) == EXIT_FAILED
    assert sorted(r.file for r in seen) == sorted(r.file for r in results)
    assert broken.to_dict()["errors"][0]["stage"] == "input"


async def test_a_full_route_refuses_the_extra_file_with_exit_code_3():
    async with emulate("openai-realtime", api_key=KEY, transcript="hello") as emu:
        # The route takes one session at a time; the second file arrives while the first runs.
        table = parse_routes(
            f"""
version: 1
providers:
  rt: {{type: openai-realtime, api_key: "${{RT_KEY}}", base_url: "{emu.url}/v1"}}
defaults:
  pipeline: s2s
  s2s: [rt]
  resilience: {{max_concurrent_sessions: 1}}
""",
            name="limit.yaml",
        )
        results = await replay_files(
            [SAMPLES / "hello.wav", SAMPLES / "weather_44k_stereo.wav"], RouteContext(), table,
            concurrency=2, env={"RT_KEY": KEY},
        )
    codes = sorted(r.exit_code for r in results)
    assert codes == [EXIT_OK, EXIT_PROVIDER]
    refused = next(r for r in results if r.exit_code == EXIT_PROVIDER)
    assert refused.error_type == "CapacityError" and refused.to_dict()["errors"][0]["stage"] == "admission"
    assert exit_code(results) == EXIT_PROVIDER


async def test_missing_key_fails_before_any_audio():
    from voicerouter.errors import MissingSecretError

    table = s2s_table("http://127.0.0.1:9")
    with pytest.raises(MissingSecretError, match="RT_KEY"):
        await replay_files([SAMPLES / "hello.wav"], RouteContext(flags={"s2s": True}), table, env={})
