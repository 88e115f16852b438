"""Percentiles, turns rebuilt from events, and grouping by route / tenant / provider, on recorded logs."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from voicerouter.observe.logs import read_events
from voicerouter.observe.stats import (
    Distribution,
    analyze,
    audio_clock,
    by_session,
    group_stats,
    percentile,
    provider_incidents,
    speech_regions,
)

FIXTURES = Path(__file__).parent / "fixtures"
# What the fixtures were written with: (session, turn) -> (turn-end delay, STT final, TTS first audio).
KNOWN = {
    ("s-acme-1", 1): (600, 180, 250),
    ("s-acme-1", 2): (400, 1720, 1800),
    ("s-acme-1", 3): (350, 210, 300),
    ("s-acme-2", 1): (600, 150, 520),
    ("s-acme-2", 2): (500, 170, 240),
    ("s-globex-1", 1): (700, 320, 410),
    ("s-globex-1", 2): (650, 300, 380),
    ("s-globex-1", 3): (600, 350, 900),
}


@pytest.fixture(scope="module")
def analysis():
    return analyze(read_events([FIXTURES]).events)


@pytest.mark.parametrize("q", [0, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 100])
def test_percentile_matches_numpy_linear(q):
    rng = random.Random(q)
    for size in (1, 2, 3, 7, 100):
        values = [rng.uniform(0, 5000) for _ in range(size)]
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q, method="linear")))


def test_percentile_edges():
    assert percentile([], 50) is None
    assert percentile([42.0], 99) == 42.0
    assert percentile([10, 20], 50) == 15
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    empty = Distribution.of([None, None])
    assert empty.n == 0 and empty.p50 is None and empty.max is None


def test_turns_carry_the_logged_latencies(analysis):
    got = {(t.session_id, t.turn): (t.turn_end_delay_ms, t.stt_final_ms, t.tts_first_audio_ms) for t in analysis.turns}
    assert got == KNOWN
    for t in analysis.turns:
        delay, _, first_audio = KNOWN[(t.session_id, t.turn)]
        assert t.voice_to_voice_ms == delay + first_audio


def test_turn_details(analysis):
    turns = {(t.session_id, t.turn): t for t in analysis.turns}
    first = turns[("s-acme-1", 1)]
    assert (first.reason, first.start_s, first.end_s, first.text) == ("silence", 0.5, 2.1, "hello there")
    assert first.reply == "You said: hello there"
    assert first.reply_start_s == pytest.approx(2.95) and first.reply_audio_s == pytest.approx(1.4)
    # the STT failover in turn 2 means oai-stt served it, and keeps serving turn 3
    assert turns[("s-acme-1", 2)].providers == {"stt": "oai-stt", "tts": "eleven"}
    assert turns[("s-acme-1", 3)].providers["stt"] == "oai-stt"
    assert turns[("s-globex-1", 2)].providers == {"stt": "local-stt", "tts": "local-tts"}
    assert turns[("s-globex-1", 3)].providers == {"stt": "local-stt", "tts": "eleven"}


def test_total_percentiles_match_numpy(analysis):
    (total,) = group_stats(analysis)
    v2v = [d + a for d, _, a in KNOWN.values()]
    assert total.turns == 8 and total.sessions == 3
    dist = total.latency["voice_to_voice"]
    assert dist.n == 8
    for q in (50, 90, 99):
        assert getattr(dist, f"p{q}") == pytest.approx(np.percentile(v2v, q))
    stt = [s for _, s, _ in KNOWN.values()]
    assert total.latency["stt_final"].p90 == pytest.approx(np.percentile(stt, 90))
    assert (total.failovers, total.retries, total.hedges, total.errors) == (2, 1, 1, 1)


def test_group_by_route_and_tenant(analysis):
    routes = {g.key: g for g in group_stats(analysis, "route")}
    assert list(routes) == ["acme-eu", "globex-ab"]
    acme = routes["acme-eu"]
    acme_v2v = [d + a for (sid, _), (d, _, a) in KNOWN.items() if sid.startswith("s-acme")]
    assert (acme.sessions, acme.turns) == (2, 5)
    assert acme.latency["voice_to_voice"].p99 == pytest.approx(np.percentile(acme_v2v, 99))
    assert (acme.failovers, acme.retries, acme.hedges, acme.errors) == (1, 1, 1, 0)
    globex = routes["globex-ab"]
    assert (globex.failovers, globex.errors, globex.turns) == (1, 1, 3)
    tenants = {g.key: g for g in group_stats(analysis, "tenant")}
    assert tenants["acme"].latency["voice_to_voice"] == acme.latency["voice_to_voice"]
    assert tenants["globex"].turns == 3


def test_group_by_provider_attributes_each_stage(analysis):
    groups = {g.key: g for g in group_stats(analysis, "provider")}
    assert sorted(groups) == ["dg", "eleven", "local-stt", "local-tts", "oai-stt"]
    dg = groups["dg"]
    assert dg.stages == ["stt"] and dg.turns == 3
    assert dg.latency["stt_final"].n == 3
    assert dg.latency["stt_final"].p50 == pytest.approx(np.percentile([180, 150, 170], 50))
    assert dg.latency["tts_first_audio"].n == 0  # dg never spoke: an empty metric, not a crash
    eleven = groups["eleven"]
    assert eleven.stages == ["tts"] and eleven.turns == 6
    assert eleven.latency["tts_first_audio"].p90 == pytest.approx(np.percentile([250, 1800, 300, 520, 240, 900], 90))
    assert eleven.latency["stt_final"].n == 0
    assert (dg.failovers, dg.hedges) == (1, 1)  # dg failed over away once, and was in one hedge
    assert groups["local-tts"].errors == 1 and groups["local-tts"].failovers == 1
    assert groups["eleven"].retries == 1


def test_provider_incidents(analysis):
    rows = {r.provider: r for r in provider_incidents(analysis)}
    assert (rows["dg"].failovers_from, rows["dg"].hedges, rows["dg"].hedges_won) == (1, 1, 1)
    assert (rows["oai-stt"].failovers_to, rows["oai-stt"].hedges_won) == (1, 0)
    assert (rows["eleven"].retries, rows["eleven"].failovers_to) == (1, 1)
    assert (rows["local-tts"].errors, rows["local-tts"].failovers_from) == (1, 1)


def test_unknown_grouping_is_refused(analysis):
    with pytest.raises(ValueError, match="cannot group by"):
        group_stats(analysis, "colour")  # type: ignore[arg-type]


def test_speech_regions_and_audio_clock():
    sessions = by_session(read_events([FIXTURES]).events)
    regions = speech_regions(sessions["s-globex-1"])
    assert [(r.start_s, r.end_s) for r in regions] == [(0.4, 1.6), (3.0, 4.4), (7.0, 8.5)]
    # globex was replayed at twice real time: session clock 2.2 s is audio 4.4 s
    to_audio = audio_clock(sessions["s-globex-1"])
    assert to_audio(2.2) == pytest.approx(4.4)
    assert to_audio(1.85) == pytest.approx(3.7)
    open_region = speech_regions([{"type": "speech_start", "audio_s": 1.0, "t": 1.0, "session_id": "x"}])
    assert open_region[0].end_s is None
