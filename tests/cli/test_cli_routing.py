"""`resolve`, `validate`, `schema` as real processes: output formats, exit codes, secret hygiene."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CANARY = "sk-CANARY-7f3a9c1e5b"


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "VOICEROUTER_ROUTES"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "voicerouter", *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=60
    )


@pytest.fixture
def canary_env() -> dict[str, str]:
    names = ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "ELEVENLABS_API_KEY", "CARTESIA_API_KEY", "AZURE_SPEECH_KEY", "GLOBEX_BOT_TOKEN")
    return {name: CANARY for name in names}


def test_resolve_json_keys(example_routes):
    proc = run("resolve", "--routes", str(example_routes), "--tenant", "acme", "--region", "eu-west-1", "--session-id", "s-1", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["route"] == "acme-eu" and plan["matched"] is True and plan["pipeline"] == "stt_tts"
    assert plan["stt"] == ["whisper-eu", "dg", "oai-stt"] and plan["tts"] == ["azure-tts", "local-tts"]
    assert plan["s2s"] is None and plan["session_id"] == "s-1"
    assert plan["provider_configs"]["dg"]["api_key"] == "${DEEPGRAM_API_KEY}"
    assert plan["providers"] == {"stt": plan["stt"], "tts": plan["tts"]}  # stage -> names, as in replay


def test_resolve_flags_and_split(example_routes):
    proc = run("resolve", "--routes", str(example_routes), "--tenant", "acme", "--flag", "s2s", "--json")
    assert json.loads(proc.stdout)["pipeline"] == "s2s"
    proc = run("resolve", "--routes", str(example_routes), "--tenant", "acme", "--flag", "s2s=false", "--json")
    assert json.loads(proc.stdout)["route"] == "acme"
    first = json.loads(run("resolve", "--routes", str(example_routes), "--tenant", "globex", "-s", "abc", "--json").stdout)
    again = json.loads(run("resolve", "--routes", str(example_routes), "--tenant", "globex", "-s", "abc", "--json").stdout)
    assert first["stages"]["tts"]["picked"] == again["stages"]["tts"]["picked"]
    assert first["tts"][0] == first["stages"]["tts"]["picked"]


def test_resolve_human_output_explains(example_routes):
    proc = run("resolve", "--routes", str(example_routes), "--tenant", "nobody")
    assert proc.returncode == 0
    assert "route defaults" in proc.stdout and "no route matched" in proc.stdout
    assert "warning: no route matched tenant=nobody" in proc.stderr


def test_routes_lookup_order(tmp_path, example_routes):
    proc = run("resolve", "--tenant", "acme", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--routes" in proc.stderr and "VOICEROUTER_ROUTES" in proc.stderr and "routes.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr
    (tmp_path / "routes.yaml").write_text(example_routes.read_text())
    assert json.loads(run("resolve", "--tenant", "acme", "--json", cwd=tmp_path).stdout)["route"] == "acme"
    env_file = tmp_path / "other.yaml"
    env_file.write_text(example_routes.read_text().replace("name: acme\n", "name: acme-from-env\n"))
    out = run("resolve", "--tenant", "acme", "--json", cwd=tmp_path, env={"VOICEROUTER_ROUTES": str(env_file)})
    assert json.loads(out.stdout)["route"] == "acme-from-env"


def test_bad_flag_is_usage_error(example_routes):
    proc = run("resolve", "--routes", str(example_routes), "--flag", "beta=maybe")
    assert proc.returncode == 2 and "bad --flag" in proc.stderr


def test_resolve_broken_table_one_line_error(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("providers:\n  a: {type: piper\n")
    proc = run("resolve", "--routes", str(path))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {path}:") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_validate_exit_codes_and_formats(tmp_path, example_routes):
    assert run("validate", str(example_routes)).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  a: {type: piper}\ndefaults: {stt: [a], tts: [a]}\n")
    proc = run("validate", str(bad), "--format", "json")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["valid"] is False and {f["code"] for f in data["findings"]} == {"wrong-kind"}
    gh = run("validate", str(bad), "--format", "github")
    assert gh.returncode == 1 and gh.stdout.startswith("::error file=")
    assert run("validate").returncode == 2
    assert run("validate", str(bad), "--format", "xml").returncode == 2
    assert run("validate", str(tmp_path / "missing.yaml")).returncode == 1


def test_validate_strict_reports_but_never_fails_on_unset_env(example_routes):
    # Unset variables are about the machine (CI has no keys), not the table: a note, even with --strict.
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_KEY", "_TOKEN"))}
    proc = subprocess.run([sys.executable, "-m", "voicerouter", "validate", str(example_routes), "--strict"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and "info: environment variable DEEPGRAM_API_KEY" in proc.stdout
    assert "[VR501 unset-env]" in proc.stdout


def test_no_output_ever_contains_a_key(tmp_path, example_routes, canary_env):
    outputs = []
    for args in (
        ("resolve", "--routes", str(example_routes), "--tenant", "globex", "--json"),
        ("resolve", "--routes", str(example_routes), "--tenant", "initech", "--region", "us-east-1"),
        ("validate", str(example_routes), "--format", "json"),
        ("validate", str(example_routes), "--strict"),
    ):
        proc = run(*args, env=canary_env)
        outputs.append(proc.stdout + proc.stderr)
    literal = tmp_path / "literal.yaml"
    literal.write_text(example_routes.read_text().replace('"${CARTESIA_API_KEY}"', CANARY))
    for fmt in ("text", "json", "github"):
        proc = run("validate", str(literal), "--format", fmt, env=canary_env)
        outputs.append(proc.stdout + proc.stderr)
        assert "literal-secret" in proc.stdout
    proc = run("resolve", "--routes", str(literal), "--tenant", "initech", "--region", "us-east-1", "--json", env=canary_env)
    assert json.loads(proc.stdout)["provider_configs"]["cartesia"]["api_key"] == "***"
    outputs.append(proc.stdout + proc.stderr)
    assert all(CANARY not in out for out in outputs)


def test_schema_is_json_schema():
    proc = run("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"providers", "defaults", "routes"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
