"""`voicerouter report` as a real process: JSON for scripts, tables for people, timelines, exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def report(*args: str, columns: int = 200, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | {"COLUMNS": str(columns)} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "voicerouter", "report", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_json_for_scripts_with_text_timeline_on_stderr():
    proc = report(str(FIXTURES), "--by", "tenant", "--json", "--text-timeline")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [g["key"] for g in data["groups"]] == ["acme", "globex"]
    v2v = [t["latency_ms"]["voice_to_voice"] for t in data["turns"]]
    assert data["total"]["latency_ms"]["voice_to_voice"]["p99"] == pytest.approx(np.percentile(v2v, 99), abs=1e-3)
    assert "skipped 1 bad line(s)" in proc.stderr and "globex.jsonl:13:" in proc.stderr
    assert "session s-acme-1  tenant=acme" in proc.stderr and "⚠ failover stt dg → oai-stt" in proc.stderr


def test_tables_for_people():
    # As on a terminal (rich's TTY_COMPATIBLE): boxed tables; styles stripped for the comparison.
    proc = report(str(FIXTURES / "acme.jsonl"), str(FIXTURES / "globex.jsonl"), "--by", "route", "--turns",
                  env={"TTY_COMPATIBLE": "1", "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    assert "│ acme-eu   │        2 │     5 │  850 / 1768 / 2157 │" in out
    assert "Resilience by provider" in out and "Errors" in out and "Turns of s-globex-1" in out


def test_tables_in_a_pipe_are_tab_separated():
    proc = report(str(FIXTURES / "acme.jsonl"), "--by", "route", columns=30)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert ["acme-eu", "2", "5"] == next(r for r in rows if r[0] == "acme-eu")[:3]
    assert all(line == line.rstrip() for line in proc.stdout.splitlines())


def test_timeline_pngs_use_the_source_audio_next_to_the_log(tmp_path):
    pytest.importorskip("matplotlib")
    shutil.copy(FIXTURES / "acme.jsonl", tmp_path / "events.jsonl")
    shutil.copy(FIXTURES / "globex.jsonl", tmp_path / "globex.jsonl")
    (tmp_path / "hello.wav").write_bytes(b"not audio at all")  # s-acme-1's source, unreadable
    out = tmp_path / "timelines"
    proc = report(str(tmp_path), "--timeline", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["s-acme-1.timeline.png", "s-acme-2.timeline.png", "s-globex-1.timeline.png"]
    assert all(p.stat().st_size > 10_000 for p in out.iterdir())
    assert "session s-acme-1: waveform left out" in proc.stderr and "hello.wav" in proc.stderr
    assert proc.stderr.count("timeline: ") == 3


def test_bad_input_exit_codes(tmp_path):
    strict = report(str(FIXTURES / "globex.jsonl"), "--strict")
    assert strict.returncode == 1
    assert "globex.jsonl:13: bad event line" in strict.stderr and "Traceback" not in strict.stderr
    missing = report(str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 1 and "no such event log" in missing.stderr
    (tmp_path / "empty.jsonl").write_text("\n")
    empty = report(str(tmp_path / "empty.jsonl"))
    assert empty.returncode == 2 and "no events in" in empty.stderr
    bad_by = report(str(FIXTURES), "--by", "colour")
    assert bad_by.returncode == 2


def test_otel_sends_the_logged_sessions_as_spans():
    pytest.importorskip("opentelemetry.sdk.trace")
    proc = report(str(FIXTURES / "acme.jsonl"), "--otel", env={"OTEL_TRACES_EXPORTER": "console"})
    assert proc.returncode == 0, proc.stderr
    # The console exporter writes to stderr, so stdout stays the report.
    assert proc.stderr.count('"name": "voice.session"') == 2 and proc.stderr.count('"name": "voice.turn"') == 5
    unset = report(str(FIXTURES / "acme.jsonl"), "--otel")
    assert unset.returncode == 2 and "--otel needs an exporter" in unset.stderr
