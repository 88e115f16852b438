"""`voicerouter replay` on the sample recordings through the built-in offline route (real engines)."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import soundfile as sf

from voicerouter.cli.app import app
from voicerouter.cli.common import run_app
from voicerouter.testing.speech import normalize

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    # No routes.yaml in the working directory and no $VOICEROUTER_ROUTES: the built-in table applies.
    from voicerouter.resilience import reset

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VOICEROUTER_ROUTES", raising=False)
    monkeypatch.setenv("COLUMNS", "120")
    reset()
    yield
    reset()


def cli(capsys, *args: str) -> tuple[int, str, str]:
    argv = sys.argv
    sys.argv = ["voicerouter", "replay", *map(str, args)]
    try:
        code = run_app(app)
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_json_expectations_junit_and_outputs(capsys, tmp_path):
    files = [SAMPLES / "hello.wav", SAMPLES / "two_turns_8k.wav"]
    junit = tmp_path / "junit.xml"
    out = tmp_path / "out"
    code, stdout, stderr = cli(
        capsys, *files, "--json", "--expect", SAMPLES / "expectations.yaml", "--junit", junit, "--out", out,
        "--session-id", "ci", "--tenant", "acme",
    )
    assert code == 0, stdout + stderr
    assert "built-in offline table" in stderr
    doc = json.loads(stdout)
    sessions = doc["sessions"]
    assert [s["file"] for s in sessions] == [str(f) for f in files]
    assert [s["session_id"] for s in sessions] == ["ci-1", "ci-2"]
    assert all(s["route"] == "offline" and s["errors"] == [] for s in sessions)
    hello, two = sessions
    assert len(hello["turns"]) == 1 and len(two["turns"]) == 2
    turn = hello["turns"][0]
    assert {"turn", "start_s", "end_s", "transcript", "reply", "providers", "latency_ms"} <= set(turn)
    said = "Good morning, I would like to check the status of my order."
    assert normalize(turn["transcript"]) == normalize(said)
    assert normalize(turn["reply"]) == normalize("You said: " + said)
    assert turn["providers"] == {"stt": "local-stt", "tts": "local-tts"}
    assert set(turn["latency_ms"]) == {"turn_end_delay", "tts_first_audio", "voice_to_voice"}  # audio clock
    assert set(turn["wall_latency_ms"]) == {"turn_end_delay", "stt_final", "agent", "tts_first_audio", "voice_to_voice"}
    assert 0.2 < turn["start_s"] < turn["end_s"] < 4.2
    assert two["turns"][0]["end_s"] < two["turns"][1]["start_s"]
    assert doc["expectations"]["passed"] is True

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
    names = {(c.get("classname"), c.get("name")) for c in suite.findall("testcase")}
    assert (str(files[1]), "words turn 2") in names and (str(files[0]), "turns") in names

    for stem in ("hello", "two_turns_8k"):
        info = sf.info(out / f"{stem}.reply.wav")
        assert info.samplerate == 22050 and info.frames > 22050  # more than a second of spoken reply
        events = [json.loads(line) for line in (out / f"{stem}.events.jsonl").read_text().splitlines()]
        assert events[0]["type"] == "session_start" and events[-1]["type"] == "session_end"
        assert {"turn_end", "final_transcript", "tts_first_audio", "tts_done"} <= {e["type"] for e in events}


@pytest.mark.slow
def test_human_output_and_a_failed_expectation(capsys, tmp_path):
    expect = tmp_path / "expect.yaml"
    expect.write_text("hello.wav:\n  turns: 2\n  words: [good morning, pineapple]\n")
    code, stdout, _ = cli(capsys, SAMPLES / "hello.wav", "--expect", expect)
    assert code == 1
    assert "route offline" in stdout and "turn 1" in stdout and "good morning" in stdout.lower()
    assert "turn end→" in stdout  # the latency table
    assert "✗ " in stdout and "expected 2 turn(s), got 1" in stdout and "'pineapple'" in stdout
    assert "FAILED" in stdout


@pytest.mark.slow
def test_a_corrupt_file_among_good_ones(capsys, tmp_path):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"this is not audio at all" * 10)
    code, stdout, _ = cli(capsys, SAMPLES / "weather_44k_stereo.wav", bad, SAMPLES / "hello.wav", "--json", "-j", "2")
    assert code == 1
    sessions = json.loads(stdout)["sessions"]
    assert [len(s["turns"]) for s in sessions] == [1, 0, 1]
    assert normalize(sessions[0]["turns"][0]["transcript"]) == normalize("What is the weather today?")
    assert sessions[1]["errors"][0]["message"].startswith(f"{bad}: not a readable audio file")


@pytest.mark.slow
def test_stt_down_for_every_turn_exits_3(capsys):
    code, stdout, _ = cli(capsys, SAMPLES / "two_turns_8k.wav", "--inject", "local-stt=error:503", "--json")
    assert code == 3
    (session,) = json.loads(stdout)["sessions"]
    assert session["reason"] == "providers_down"
    assert [e["stage"] for e in session["errors"]] == ["stt", "stt"]


def test_usage_errors(capsys, tmp_path):
    code, _, err = cli(capsys, SAMPLES / "hello.wav", "--junit", tmp_path / "j.xml")
    assert code == 2 and "--junit needs --expect" in err
    code, _, err = cli(capsys, SAMPLES / "hello.wav", "--concurrency", "0")
    assert code == 2 and "--concurrency must be at least 1" in err
    code, _, err = cli(capsys, SAMPLES / "hello.wav", "--inject", "local-stt=explode")
    assert code == 2 and "fault" in err


def test_bad_expectations_file_is_reported_before_replaying(capsys, tmp_path):
    expect = tmp_path / "expect.yaml"
    expect.write_text("hello.wav:\n  turn: 1\n")
    code, stdout, err = cli(capsys, SAMPLES / "hello.wav", "--expect", expect)
    assert code == 1 and stdout == ""
    assert f"{expect}:2" in err and "unknown expectation 'turn'" in err


@pytest.mark.slow
def test_timeline_png_per_file(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    code, stdout, _ = cli(capsys, SAMPLES / "weather_44k_stereo.wav", "--timeline", tmp_path / "tl")
    assert code == 0 and "timelines written to" in stdout
    png = tmp_path / "tl" / "weather_44k_stereo.timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_quickstart_command_meets_the_sample_expectations(capsys, tmp_path):
    # The README's one-command demo: every sample through the offline route, expectations checked.
    code, stdout, stderr = cli(
        capsys, *sorted(SAMPLES.glob("*.wav")), "--expect", SAMPLES / "expectations.yaml", "--out", tmp_path
    )
    assert code == 0, stdout + stderr
    assert "expectations passed" in stdout + stderr
    assert len(list(tmp_path.glob("*.reply.wav"))) == len(list(SAMPLES.glob("*.wav")))


@pytest.mark.slow
def test_emulate_runs_a_cloud_table_offline_without_keys(capsys, tmp_path, monkeypatch):
    for var in ("DEEPGRAM_API_KEY", "CARTESIA_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    table = tmp_path / "cloud.yaml"
    table.write_text(
        "version: 1\n"
        "providers:\n"
        "  dg: {type: deepgram, kind: stt, model: nova-3, api_key: '${DEEPGRAM_API_KEY}'}\n"
        "  voice: {type: cartesia, kind: tts, voice: a0e99841-438c-4a64-b679-ae501e7d6091, api_key: '${CARTESIA_API_KEY}'}\n"
        "defaults:\n"
        "  stt: [dg]\n"
        "  tts: [voice]\n"
        "  resilience: {first_result_timeout_ms: 30000, stall_timeout_ms: 20000, turn_deadline_ms: 60000}\n"
    )
    code, stdout, stderr = cli(capsys, SAMPLES / "hello.wav", "--routes", table, "--emulate", "--json")
    assert code == 0, stdout + stderr
    assert "emulating dg at http://127.0.0.1:" in stderr and "emulating voice at http://127.0.0.1:" in stderr
    (session,) = json.loads(stdout)["sessions"]
    (turn,) = session["turns"]
    assert turn["providers"] == {"stt": "dg", "tts": "voice"}
    assert "morning" in turn["transcript"]  # the emulator transcribed the audio it was sent


@pytest.mark.slow
def test_a_local_engine_that_misses_its_deadline_is_named_once_as_slow_not_down(capsys, tmp_path):
    table = tmp_path / "tight.yaml"
    table.write_text(
        "version: 1\n"
        "providers:\n"
        "  local-stt: {type: pocketsphinx}\n"
        "  backup-stt: {type: pocketsphinx}\n"
        "  local-tts: {type: piper}\n"
        "defaults:\n"
        "  stt: [local-stt, backup-stt]\n"
        "  tts: [local-tts]\n"
        "  resilience: {retries: 0, first_result_timeout_ms: 1}\n"
    )
    code, _, stderr = cli(capsys, SAMPLES / "two_turns_8k.wav", "--routes", table, "--json")
    assert code == 0, stderr
    assert stderr.count("the local engine 'local-stt' (pocketsphinx) missed its deadline") == 1
    assert "slow here, not down" in stderr and "first_result_timeout_ms" in stderr
    injected, _, quiet = cli(capsys, SAMPLES / "hello.wav", "--inject", "local-stt=slow:2s", "--json")
    assert "missed its deadline" not in quiet  # an injected delay is not the machine's fault


@pytest.mark.slow
def test_realtime_shows_turns_as_they_happen(capsys):
    code, stdout, stderr = cli(capsys, SAMPLES / "hello.wav", "--realtime", "--json")
    assert code == 0, stderr
    you = next(line for line in stderr.splitlines() if "turn 1  you" in line)
    reply = next(line for line in stderr.splitlines() if "turn 1  reply" in line)
    assert stderr.index(you) < stderr.index(reply) and "good morning" in you.lower()
    assert json.loads(stdout)["sessions"][0]["turns"]  # stdout stays the result
