"""Output for pipes and files: when stdout is not a terminal nothing is wrapped, padded or cut."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "VOICEROUTER_ROUTES"}
    # A narrow terminal size must not matter when stdout is a pipe.
    return subprocess.run(
        [sys.executable, "-m", "voicerouter", *args], capture_output=True, text=True, timeout=120,
        env=base | {"COLUMNS": "40"} | (env or {}), cwd=cwd,
    )


def test_providers_rows_are_whole_lines_for_grep():
    proc = run("providers")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    compatible = [r for r in rows if r[0] == "openai-compatible"]
    assert len(compatible) == 1, proc.stdout
    assert "self-hosted Whisper" in compatible[0][-1]  # the description, not cut at 40 columns
    header = next(r for r in rows if r[0] == "type")
    assert header[:2] == ["type", "kinds"]


def test_resolve_lines_are_not_padded(example_routes):
    proc = run("resolve", "--routes", str(example_routes), "--tenant", "acme", "--region", "eu-west-1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines and all(line == line.rstrip() for line in lines)
    turn = next(line for line in lines if line.startswith("turn\t"))
    assert "max_turn_ms=30000" in turn  # one line, however long


def test_check_errors_are_never_cut(tmp_path):
    table = tmp_path / "routes.yaml"
    table.write_text(
        "version: 1\n"
        "providers:\n"
        "  far-stt: {type: openai-compatible, kind: stt, base_url: 'http://127.0.0.1:9', timeout_ms: 2000}\n"
        "  far-tts: {type: openai-compatible, kind: tts, base_url: 'http://127.0.0.1:9', timeout_ms: 2000}\n"
        "defaults: {stt: [far-stt], tts: [far-tts]}\n"
    )
    as_json = run("check", "--routes", str(table), "--json", "--timeout-ms", "3000")
    as_text = run("check", "--routes", str(table), "--timeout-ms", "3000")
    assert as_json.returncode == as_text.returncode == 3
    errors = [p["error"] for p in json.loads(as_json.stdout)["providers"]]
    assert errors and all(errors)
    for error in errors:
        assert error in as_text.stdout  # the whole cause, on one line
    assert all(line == line.rstrip() for line in as_text.stdout.splitlines())


def test_incident_lines_keep_the_whole_cause():
    from voicerouter.observe.timeline_text import incident_line

    cause = "every stt provider failed (dg: skipped: circuit breaker open after: live socket: [Errno -2] Name or service not known)"
    line = incident_line({"type": "error", "stage": "stt", "message": cause})
    assert line is not None and line.endswith("Name or service not known)")


@pytest.mark.slow
def test_replay_replies_are_not_split(tmp_path):
    sample = ROOT / "samples" / "two_turns_8k.wav"
    proc = run("replay", str(sample), "--session-id", "pipe", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    replies = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("reply")]
    assert replies, proc.stdout
    for reply in replies:
        assert reply.endswith('"') and reply.count('"') == 2, reply  # the whole reply on its line
    assert all(line == line.rstrip() for line in proc.stdout.splitlines())


@pytest.mark.slow
def test_multi_file_replay_prints_each_file_as_it_finishes_and_ctrl_c_keeps_them(tmp_path):
    import shutil
    import signal

    files = []
    for n in range(3):
        files.append(tmp_path / f"call{n}.wav")
        shutil.copy(ROOT / "samples" / "hello.wav", files[-1])
    env = {k: v for k, v in os.environ.items() if k != "VOICEROUTER_ROUTES"}
    proc = subprocess.Popen([sys.executable, "-m", "voicerouter", "replay", *map(str, files), "-j", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the first file's result arrives while the others still run
            if line.startswith(str(files[0])):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: " in err and " of 3 file(s) finished" in err and str(files[0]) in err


def test_emulate_json_says_where_the_emulators_are():
    import signal

    import httpx

    env = {k: v for k, v in os.environ.items() if k != "VOICEROUTER_ROUTES"}
    proc = subprocess.Popen([sys.executable, "-m", "voicerouter", "emulate", "openai", "deepgram", "--json",
                             "--fault", "deepgram=error:503*1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["ok"] is True and set(ready["emulators"]) == {"openai", "deepgram"}
        openai = ready["emulators"]["openai"]
        assert openai["base_url"] == openai["url"] + "/v1" and ready["emulators"]["deepgram"]["faults"] == ["error:503*1"]
        denied = httpx.post(ready["emulators"]["deepgram"]["url"] + "/v1/listen", content=b"",
                            headers={"Authorization": "Token nope"})
        assert denied.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode in (0, 130)
