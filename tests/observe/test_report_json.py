"""The report dict (the `report --json` shape) and its rich rendering, including empty groups."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from voicerouter.observe.logs import read_events
from voicerouter.observe.report import build_report, fmt_dist, render_report

FIXTURES = Path(__file__).parent / "fixtures"
METRICS = {"voice_to_voice", "stt_final", "tts_first_audio", "turn_end_delay", "agent"}
GROUP_KEYS = {"key", "session_count", "turn_count", "stages", "latency_ms", "failovers", "retries", "hedges", "errors"}


@pytest.fixture(scope="module")
def log():
    return read_events([FIXTURES / "acme.jsonl", FIXTURES / "globex.jsonl"])


def test_json_shape(log):
    report = json.loads(json.dumps(build_report(log, "route")))
    assert set(report) == {
        "version", "group_by", "percentiles", "files", "skipped_lines", "session_count",
        "total", "groups", "providers", "turns", "errors", "deliveries",
    }  # fmt: skip
    assert report["version"] == 1 and report["group_by"] == "route"
    assert report["percentiles"] == {"method": "linear", "quantiles": [50, 90, 99]}
    assert report["skipped_lines"][0]["location"].endswith("globex.jsonl:13")
    assert report["session_count"] == 3
    for group in [report["total"], *report["groups"]]:
        assert set(group) == GROUP_KEYS
        assert set(group["latency_ms"]) == METRICS
        for dist in group["latency_ms"].values():
            assert set(dist) == {"n", "p50", "p90", "p99", "mean", "max"}
    assert [g["key"] for g in report["groups"]] == ["acme-eu", "globex-ab"]
    v2v = [t["latency_ms"]["voice_to_voice"] for t in report["turns"]]
    assert report["total"]["latency_ms"]["voice_to_voice"]["p90"] == pytest.approx(np.percentile(v2v, 90), abs=1e-3)
    assert len(report["turns"]) == 8
    turn = report["turns"][1]
    assert turn["providers"] == {"stt": "oai-stt", "tts": "eleven"} and turn["latency_ms"]["voice_to_voice"] == 2200
    (error,) = report["errors"]
    assert (error["provider"], error["stage"], error["turn"], error["error_type"]) == (
        "local-tts", "tts", 3, "TransientProviderError",
    )  # fmt: skip
    assert {p["provider"] for p in report["providers"]} == {"dg", "eleven", "local-tts", "oai-stt"}


def test_without_grouping_there_are_no_groups(log):
    report = build_report(log)
    assert report["group_by"] is None and report["groups"] == []
    assert report["total"]["key"] is None and report["total"]["turn_count"] == 8


def test_empty_metric_prints_a_dash():
    assert fmt_dist({"n": 0, "p50": None, "p90": None, "p99": None}) == "-"
    assert fmt_dist({"n": 2, "p50": 10.4, "p90": 19.6, "p99": 20.0}) == "10 / 20 / 20"


def render(report, width: int, turns: bool = False) -> str:
    out = io.StringIO()
    render_report(report, Console(file=out, width=width, color_system=None), show_turns=turns)
    return out.getvalue()


def test_rendering_wide_and_narrow(log):
    report = build_report(log, "provider")
    wide = render(report, 200)
    assert "850 / 1066 / 1115" in wide  # dg voice->voice p50/p90/p99
    assert "Resilience by provider" in wide
    # messages are printed as written, not taken for rich markup
    assert "[provider=local-tts route=globex-ab]" in wide
    narrow = render(report, 80, turns=True)
    assert all(len(line) <= 80 for line in narrow.splitlines())
    assert "voice→voice" in narrow and "Turns and incidents" in narrow and "Turns of s-globex-1" in narrow
    assert "│ total     │ voice→voice    │ 8 │ 1070 │ 1710 │ 2151 │ 2200 │" in narrow


def test_group_with_no_finished_turn_renders_dashes(tmp_path):
    path = tmp_path / "events.jsonl"
    lines = [
        {"type": "session_start", "t": 0, "session_id": "s1", "route": "quiet", "pipeline": "stt_tts", "stt": ["a"]},
        {"type": "speech_start", "t": 0.5, "audio_s": 0.5, "session_id": "s1", "route": "quiet"},
        {"type": "error", "t": 0.9, "session_id": "s1", "route": "quiet", "stage": "stt", "message": "boom"},
        {"type": "session_end", "t": 1, "session_id": "s1", "route": "quiet", "turns": 0},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    report = build_report(read_events([path]), "provider")
    (group,) = report["groups"]
    assert group["key"] == "a" and group["turn_count"] == 0 and group["errors"] == 1
    assert group["latency_ms"]["voice_to_voice"] == {
        "n": 0,
        "p50": None,
        "p90": None,
        "p99": None,
        "mean": None,
        "max": None,
    }
    text = render(report, 200)
    assert "│ a " in text and " - / " not in text
