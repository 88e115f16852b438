"""replay never loses finished results: Ctrl-C, unwritable report paths, OTel console spans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
TABLE = """\
version: 1
providers:
  s: {type: pocketsphinx}
  t: {type: piper}
defaults: {stt: [s], tts: [t]}
"""


def silence(path: Path, seconds: float) -> Path:
    sf.write(path, np.zeros(int(16000 * seconds), dtype=np.int16), 16000, subtype="PCM_16")
    return path


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "voicerouter", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, **(env or {})},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )


@pytest.mark.slow
def test_ctrl_c_prints_what_finished_and_exits_130(tmp_path):
    (tmp_path / "routes.yaml").write_text(TABLE)
    short, long = silence(tmp_path / "short.wav", 0.3), silence(tmp_path / "long.wav", 60)
    out = tmp_path / "out"
    proc = start(["replay", "--realtime", "--json", "--out", str(out), str(short), str(long)], tmp_path)
    events = out / "short.events.jsonl"
    deadline = time.monotonic() + 120
    while not (events.exists() and "session_end" in events.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(0.5)  # the long file is under way
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    doc = json.loads(stdout)
    assert doc["interrupted"] is True and [Path(s["file"]).name for s in doc["sessions"]] == ["short.wav"]
    assert "interrupted: 1 of 2 file(s) finished" in stderr and "terminate called" not in stderr


@pytest.mark.parametrize("option", ["--junit", "--out", "--timeline"])
def test_unwritable_report_paths_are_refused_before_the_run(tmp_path, option):
    (tmp_path / "routes.yaml").write_text(TABLE)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    args = ["replay", str(silence(tmp_path / "s.wav", 0.2)), option, str(blocker / "inside")]
    if option == "--junit":
        args += ["--expect", str(ROOT / "samples" / "expectations.yaml")]
    proc = start(args, tmp_path)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and f"{option} {blocker / 'inside'}" in stderr and "not a directory" in stderr


def test_console_spans_never_mix_into_json_stdout(tmp_path):
    pytest.importorskip("opentelemetry.sdk")
    (tmp_path / "routes.yaml").write_text(TABLE)
    proc = start(["replay", "--json", str(silence(tmp_path / "s.wav", 0.3))], tmp_path, env={"OTEL_TRACES_EXPORTER": "console"})
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["ok"] is True and '"voice.session"' in stderr
