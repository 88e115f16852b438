"""A fast replay is exact: the same files, table and seed give the same JSON on every run, at any
concurrency, with the machine busy. Only wall-clock fields (`wall_s`, `wall_latency_ms`) vary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from voicerouter.config.loader import builtin_routes
from voicerouter.routing.plan import RouteContext
from voicerouter.session.replay import replay_files

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
WALL_CLOCK = {"wall_s", "wall_latency_ms"}


def without_wall_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_wall_clock(v) for k, v in value.items() if k not in WALL_CLOCK}
    if isinstance(value, list):
        return [without_wall_clock(v) for v in value]
    return value


@pytest.fixture
def busy_cpu():
    """Another process spinning on the CPU for as long as the test runs."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        burner.kill()
        burner.wait()



@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_ten_replays_with_two_at_a_time_on_a_busy_machine_give_the_same_json(busy_cpu):
    # The quickstart's files: their turn ends used to flip (silence, complete_sentence,
    # incomplete_wait) with whichever partial had arrived in wall-clock time.
    files = [SAMPLES / "short_pause_22k.wav", SAMPLES / "two_turns_8k.wav"]
    table = builtin_routes()
    ctx = RouteContext(session_id="determinism")
    runs = []
    for _ in range(10):
        results = await replay_files(files, ctx, table, concurrency=2)
        runs.append([without_wall_clock(r.to_dict()) for r in results])
    assert all(run == runs[0] for run in runs)
    turns = [t for session in runs[0] for t in session["turns"]]
    assert [len(session["turns"]) for session in runs[0]] == [1, 2]
    assert all(t["error"] is None and t["transcript"] and t["reply"] for t in turns)
    assert all(set(t["latency_ms"]) == {"turn_end_delay", "tts_first_audio", "voice_to_voice"} for t in turns)
