"""Timeline PNGs from recorded logs: one per session, waveform when the source audio is found."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from voicerouter.audio.io import write_wav
from voicerouter.errors import UsageError
from voicerouter.observe.logs import read_events
from voicerouter.observe.stats import by_session
from voicerouter.observe.timeline_png import (
    COLORS,
    PLOT_HINT,
    audio_from_logs,
    find_source_audio,
    render_timeline_png,
    write_timelines,
)

FIXTURES = Path(__file__).parent / "fixtures"
RATE = 16000


def speechlike(duration_s: float, regions: list[tuple[float, float]]) -> bytes:
    """A voiced buzz (harmonics of 140 Hz, syllable-rate envelope) inside `regions`, silence elsewhere."""
    t = np.arange(int(duration_s * RATE)) / RATE
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    gate = np.zeros_like(t)
    for start, end in regions:
        gate[(t >= start) & (t < end)] = 0.35
    return (voice * gate * 32767 / 2).astype("<i2").tobytes()


def wave_pixels(path: Path) -> int:
    """Pixels drawn in the waveform colour."""
    image = pytest.importorskip("matplotlib.image").imread(str(path))[..., :3]
    target = np.array([int(COLORS["wave"][i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(image - target).max(axis=2) < 0.03).sum())


@pytest.fixture
def log_dir(tmp_path) -> Path:
    pytest.importorskip("matplotlib")
    shutil.copy(FIXTURES / "acme.jsonl", tmp_path / "acme.jsonl")
    # s-acme-1 names hello.wav as its source; put a recording of its speech next to the log
    write_wav(tmp_path / "hello.wav", speechlike(16.0, [(0.5, 2.1), (5.0, 7.2), (12.0, 13.5)]), RATE)
    return tmp_path


def test_one_png_per_session_with_waveform_when_source_is_found(log_dir, tmp_path):
    log = read_events([log_dir / "acme.jsonl"])
    out = tmp_path / "timelines"
    warnings: list[str] = []
    paths = write_timelines(log.events, out, audio=audio_from_logs(log.session_files, warn=warnings.append))
    assert [p.name for p in paths] == ["s-acme-1.timeline.png", "s-acme-2.timeline.png"]
    assert warnings == []  # call-2.wav is simply absent: no waveform, no warning
    for path in paths:
        assert path.is_file() and path.stat().st_size > 10_000
        height, width = pytest.importorskip("matplotlib.image").imread(str(path)).shape[:2]
        assert width > 1200 and 500 < height < width
    with_audio, without_audio = (wave_pixels(p) for p in paths)
    assert with_audio > 5_000 and without_audio < 100


def test_render_from_memory_and_replayed_session(tmp_path):
    pytest.importorskip("matplotlib")
    events = by_session(read_events([FIXTURES]).events)["s-globex-1"]
    pcm = speechlike(11.5, [(0.4, 1.6), (3.0, 4.4), (7.0, 8.5)])
    path = render_timeline_png(events, pcm, RATE, tmp_path / "deep" / "globex.png")
    assert path == tmp_path / "deep" / "globex.png" and path.stat().st_size > 10_000
    assert wave_pixels(path) > 5_000


def test_unreadable_source_is_reported_not_fatal(log_dir, tmp_path):
    (log_dir / "hello.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    log = read_events([log_dir / "acme.jsonl"])
    warnings: list[str] = []
    paths = write_timelines(log.events, tmp_path / "t", audio=audio_from_logs(log.session_files, warn=warnings.append))
    assert len(paths) == 2 and len(warnings) == 1
    assert "s-acme-1" in warnings[0] and "hello.wav" in warnings[0]


def test_find_source_audio(tmp_path):
    (tmp_path / "in.wav").write_bytes(b"x")
    assert find_source_audio("in.wav", [tmp_path]) == tmp_path / "in.wav"
    assert find_source_audio("/elsewhere/recordings/in.wav", [tmp_path]) == tmp_path / "in.wav"
    assert find_source_audio(str(tmp_path / "in.wav"), []) == tmp_path / "in.wav"
    assert find_source_audio("mic", [tmp_path]) is None
    assert find_source_audio("gone.wav", [tmp_path]) is None


def test_missing_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an environment without the extra looks like
    events = by_session(read_events([FIXTURES]).events)["s-acme-1"]
    with pytest.raises(UsageError) as info:
        render_timeline_png(events, None, 0, tmp_path / "x.png")
    assert str(info.value) == "the timeline needs matplotlib: pip install 'voicerouter[plot]'" == PLOT_HINT
    assert not (tmp_path / "x.png").exists()


def test_the_gap_before_a_reply_is_split_by_stage():
    from voicerouter.observe.stats import TurnRecord
    from voicerouter.observe.timeline_png import gap_segments

    record = TurnRecord("s", 1, end_s=2.0, turn_end_delay_ms=500, stt_final_ms=300, agent_reply_ms=200,
                        tts_first_audio_ms=900, reply_start_s=3.4)
    assert [(stage, round(a, 3), round(b, 3)) for stage, a, b in gap_segments(record)] == [
        ("turn end", 2.0, 2.5), ("STT", 2.5, 2.8), ("agent", 2.8, 3.0), ("TTS", 3.0, 3.4),
    ]
    assert gap_segments(TurnRecord("s", 2)) == []


def test_event_labels_take_free_rows():
    from voicerouter.observe.timeline_png import label_rows

    assert label_rows([0.0, 0.1, 0.2, 5.0, 5.05], spacing=1.0) == [0, 1, 2, 0, 1]
