"""Every command's --json output validates against the JSON Schema shipped in schemas/, and the
commands share one vocabulary (turn, transcript, providers, latency_ms, ok)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
FIXTURES = ROOT / "tests" / "observe" / "fixtures"


def run_json(*args: str, cwd: Path | None = None) -> object:
    env = {k: v for k, v in os.environ.items() if k != "VOICEROUTER_ROUTES"}
    proc = subprocess.run([sys.executable, "-m", "voicerouter", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)
    assert proc.returncode in (0, 1, 3), proc.stderr
    return json.loads(proc.stdout)


def check(name: str, doc: object) -> None:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(doc, schema)


def test_every_schema_is_a_valid_json_schema():
    names = sorted(p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json"))
    assert names == ["call", "check", "providers", "replay", "report", "resolve", "sms", "validate"]
    for name in names:
        jsonschema.Draft202012Validator.check_schema(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


def test_routing_commands(example_routes, tmp_path):
    check("validate", run_json("validate", str(example_routes), "--json"))
    plan = run_json("resolve", "--routes", str(example_routes), "--tenant", "globex", "--session-id", "s", "--json")
    check("resolve", plan)
    assert plan["providers"]["tts"] == plan["tts"]
    check("providers", run_json("providers", "--json"))
    table = tmp_path / "routes.yaml"
    table.write_text("version: 1\nproviders:\n  far: {type: openai-compatible, kind: stt, base_url: 'http://127.0.0.1:9'}\n"
                     "  t: {type: openai-compatible, kind: tts, base_url: 'http://127.0.0.1:9'}\ndefaults: {stt: far, tts: t}\n")
    result = run_json("check", "--routes", str(table), "--json", "--timeout-ms", "2000")
    check("check", result)
    assert result["ok"] is False


def test_report():
    report = run_json("report", str(FIXTURES / "acme.jsonl"), str(FIXTURES / "globex.jsonl"), "--by", "provider", "--json")
    check("report", report)
    turn = report["turns"][0]
    assert {"turn", "transcript", "providers", "latency_ms"} <= set(turn) and "text" not in turn
    assert set(turn["latency_ms"]) == {"turn_end_delay", "stt_final", "agent", "tts_first_audio", "voice_to_voice"}
    assert isinstance(report["session_count"], int) and "sessions" not in report


@pytest.mark.slow
def test_replay_uses_the_same_vocabulary_as_report(tmp_path):
    out = tmp_path / "out"
    replay = run_json("replay", str(ROOT / "samples" / "hello.wav"), "--json", "--out", str(out), "--session-id", "v",
                      cwd=tmp_path)
    check("replay", replay)
    (session,) = replay["sessions"]
    assert replay["ok"] is session["ok"] is True
    report = run_json("report", str(out), "--json")
    check("report", report)
    played, logged = session["turns"][0], report["turns"][0]
    assert len(session["turns"]) == len(report["turns"])
    assert played["turn"] == logged["turn"] == 1
    assert played["transcript"] == logged["transcript"]
    assert played["providers"].items() <= logged["providers"].items()  # the log also names the agent
    assert set(played["latency_ms"]) <= set(logged["latency_ms"])
    assert isinstance(session["providers"]["stt"], list)  # a session's providers are chains, a turn's are names
