"""End to end on real speech: replay samples/hello.wav offline, then report and draw its timeline from the log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from voicerouter.config.loader import builtin_routes
from voicerouter.observe.logs import read_events
from voicerouter.observe.report import build_report
from voicerouter.observe.timeline_png import render_timeline_png
from voicerouter.observe.timeline_text import render_timeline_text
from voicerouter.routing.plan import RouteContext
from voicerouter.session.replay import replay_files

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.mark.slow
async def test_replayed_log_reports_and_draws(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    (result,) = await replay_files(
        [SAMPLES / "hello.wav"], RouteContext(session_id="obs-hello"), builtin_routes(), out_dir=out
    )
    assert result.ok, result.to_dict()
    log = read_events([out], strict=True)  # the session writes only well-formed lines
    assert log.sessions() == ["obs-hello"]

    report = build_report(log)
    (turn,) = report["turns"]
    assert turn["reason"] and turn["end_s"] > turn["start_s"] > 0.2
    assert turn["providers"]["stt"] and turn["providers"]["tts"]
    assert "morning" in (turn["transcript"] or "") or "order" in (turn["transcript"] or "")
    latency = turn["latency_ms"]
    assert latency["voice_to_voice"] == pytest.approx(latency["turn_end_delay"] + latency["tts_first_audio"])
    assert report["total"]["latency_ms"]["voice_to_voice"]["n"] == 1

    text = render_timeline_text(log.events)
    assert "session obs-hello" in text and "turn 1 " in text and "▇" in text and "░" in text

    png = render_timeline_png(log.events, result.input_pcm, 16000, tmp_path / "hello.png")
    assert png.stat().st_size > 10_000

    # the CLI finds the input wav through session_start.source and draws its waveform
    timelines = tmp_path / "timelines"
    proc = subprocess.run(
        [sys.executable, "-m", "voicerouter", "report", str(out), "--timeline", str(timelines), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "waveform left out" not in proc.stderr
    assert (timelines / "obs-hello.timeline.png").stat().st_size > 10_000
