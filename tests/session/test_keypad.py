"""Keypad entries (DTMF): when an entry ends, the route's `dtmf:` settings and their validation,
and `voicerouter load --dtmf` specs."""

from __future__ import annotations

import textwrap

import pytest

from voicerouter.config.schema import DtmfConfig
from voicerouter.load import CallPlan, dtmf_schedule
from voicerouter.routing.validate import validate_file
from voicerouter.session.keypad import KeypadCollector, normalize_digit, parse_dtmf


def press_all(collector: KeypadCollector, keys: str, start: float = 1.0, gap: float = 0.25):
    entries = [collector.press(key, start + i * gap) for i, key in enumerate(keys)]
    return [e for e in entries if e is not None]


def test_terminator_ends_the_entry_and_is_not_part_of_it():
    collector = KeypadCollector(DtmfConfig())
    (entry,) = press_all(collector, "42#")
    assert (entry.digits, entry.ended_by, entry.start_s, entry.end_s) == ("42", "terminator", 1.0, 1.5)
    assert collector.pending == "" and press_all(collector, "#") == []  # a terminator alone enters nothing


def test_max_digits_and_timeout_on_the_audio_clock():
    collector = KeypadCollector(DtmfConfig(max_digits=2, terminator=None, inter_digit_timeout_ms=1000))
    (entry,) = press_all(collector, "123")
    assert (entry.digits, entry.ended_by) == ("12", "max_digits") and collector.pending == "3"
    assert collector.due(2.4) is None  # the last key was at 1.5 s: not yet 1 s later
    late = collector.due(2.5)
    assert late is not None and (late.digits, late.ended_by, late.end_s) == ("3", "timeout", 1.5)
    assert collector.finish() is None


def test_digits_are_normalized_and_checked():
    assert [normalize_digit(k) for k in ("7", "*", "#", "a", " d ")] == ["7", "*", "#", "A", "D"]
    assert normalize_digit("E") is None and normalize_digit("12") is None and normalize_digit("") is None


@pytest.mark.parametrize(("settings", "problem"), [
    ("{terminator: '12'}", "terminator"),
    ("{terminator: X}", "terminator"),
    ("{text: pressed}", "{digits}"),
    ("{text: '{digits} {other}'}", "only {digits}"),
    ("{inter_digit_timeout_ms: 0}", "inter_digit_timeout_ms"),
    ("{max_digits: 0}", "max_digits"),
])
def test_bad_dtmf_settings_are_located(tmp_path, settings, problem):
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 1
        providers:
          local-stt: {{type: pocketsphinx}}
          local-tts: {{type: piper}}
        defaults:
          stt: [local-stt]
          tts: [local-tts]
          dtmf: {settings}
        """))
    errors = [f for f in validate_file(path, env={}) if f.severity == "error"]
    assert errors and problem in errors[0].message and errors[0].location.line == 8


def test_route_inherits_and_overrides_dtmf(tmp_path):
    from voicerouter import load_routes
    from voicerouter.routing.plan import RouteContext

    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        providers:
          local-stt: {type: pocketsphinx}
          local-tts: {type: piper}
        defaults:
          stt: [local-stt]
          tts: [local-tts]
          dtmf: {terminator: "*", inter_digit_timeout_ms: 2000}
        routes:
          - name: pin
            match: {tenant: bank}
            dtmf: {max_digits: 4}
        """))
    plan = load_routes(path).resolve(RouteContext(tenant="bank"))
    assert (plan.dtmf.terminator, plan.dtmf.inter_digit_timeout_ms, plan.dtmf.max_digits) == ("*", 2000, 4)
    assert plan.to_dict()["dtmf"]["max_digits"] == 4


def test_load_dtmf_specs():
    assert parse_dtmf("1#@2.5") == (2.5, "1#") and parse_dtmf("*9a") == (None, "*9A")
    for bad in ("", "12x", "1@", "1@-1", "1@soon", "1@nan"):
        with pytest.raises(ValueError, match="--dtmf"):
            parse_dtmf(bad)
    plan = CallPlan(b"", dtmf=[(None, "12"), (0.5, "#")])
    assert dtmf_schedule(plan, 3.0) == [(0.5, "#"), (3.5, "1"), (3.75, "2")]


async def test_replay_presses_keys_on_the_audio_clock(tmp_path):
    """`replay --dtmf`: a fast replay hears each key at its point of the audio, every run alike."""
    import numpy as np
    import soundfile as sf

    from voicerouter.config.loader import parse_routes
    from voicerouter.routing.plan import RouteContext
    from voicerouter.session.replay import replay_files
    from voicerouter.testing import emulate

    wav = tmp_path / "quiet.wav"
    sf.write(wav, np.zeros(16000 * 3, dtype="<i2"), 16000, subtype="PCM_16")
    key = "sk-keypad-canary-1234"
    async with emulate("deepgram", api_key=key, transcript="never") as dg, emulate("cartesia", api_key=key) as ca:
        table = parse_routes(f"""
version: 1
providers:
  dg:   {{type: deepgram, kind: stt, model: nova-3, api_key: "${{K}}", base_url: "{dg.url}"}}
  cart: {{type: cartesia, voice: v-1, api_key: "${{K}}", base_url: "{ca.url}"}}
defaults:
  stt: [dg]
  tts: [cart]
  dtmf: {{inter_digit_timeout_ms: 500}}
""", name="keys.yaml")
        runs = []
        for _ in range(2):
            (result,) = await replay_files([wav], RouteContext(session_id="keys"), table, env={"K": key},
                                           keys=[parse_dtmf("12#@0.2"), parse_dtmf("7@1.0")])
            events = [e.to_dict() for e in result.session.events]
            runs.append([(e["type"], e.get("digit"), e.get("audio_s"), e.get("digits"), e.get("ended_by"),
                          e.get("end_s"), e.get("delay_ms")) for e in events if e["type"] in ("dtmf", "turn_end")])
            assert [t.transcript for t in result.session.turns] == ["12", "7"]
            assert [t.reply for t in result.session.turns] == ["You said: 12.", "You said: 7."]
    assert runs[0] == runs[1]
    keys = [(kind, digit, at) for kind, digit, at, *_ in runs[0] if kind == "dtmf"]
    assert keys == [("dtmf", "1", 0.2), ("dtmf", "2", 0.45), ("dtmf", "#", 0.7), ("dtmf", "7", 1.0)]
    turns = [(digits, ended_by, end_s) for kind, _, _, digits, ended_by, end_s, _ in runs[0] if kind == "turn_end"]
    assert turns == [("12", "terminator", 0.7), ("7", "timeout", 1.0)]
    timeout_delay = [d for kind, *_, d in runs[0] if kind == "turn_end"][1]
    assert 500 <= timeout_delay <= 530  # 500 ms of audio after the key, to the frame


def test_replay_rejects_a_bad_dtmf_spec(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "voicerouter", "replay", str(tmp_path / "any.wav"), "--dtmf", "12x@1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--dtmf takes keys" in result.stderr and "Traceback" not in result.stderr


async def test_keys_pressed_while_speaking_take_the_next_turn_number(tmp_path):
    """A keypad entry completed while a spoken turn is being captured is its own turn, numbered
    after the spoken one, and both are answered."""
    from pathlib import Path

    from voicerouter.config.loader import parse_routes
    from voicerouter.routing.plan import RouteContext
    from voicerouter.session.replay import replay_files
    from voicerouter.testing import emulate

    hello = Path(__file__).resolve().parents[2] / "samples" / "hello.wav"
    key = "sk-keypad-canary-5678"
    async with emulate("deepgram", api_key=key, transcript="good morning") as dg, \
            emulate("cartesia", api_key=key) as ca:
        table = parse_routes(f"""
version: 1
providers:
  dg:   {{type: deepgram, kind: stt, model: nova-3, api_key: "${{K}}", base_url: "{dg.url}"}}
  cart: {{type: cartesia, voice: v-1, api_key: "${{K}}", base_url: "{ca.url}"}}
defaults: {{stt: [dg], tts: [cart]}}
""", name="keys.yaml")
        (result,) = await replay_files([hello], RouteContext(session_id="mid"), table, env={"K": key},
                                       keys=[parse_dtmf("5#@0.8")])
    turns = {t.index: t for t in result.session.turns}
    assert sorted(turns) == [1, 2] and [t.index for t in result.session.turns] == [1, 2]
    assert (turns[1].reason, turns[1].transcript) != ("dtmf", "5") and turns[2].transcript == "5"
    assert turns[2].reply == "You said: 5." and turns[1].reply == "You said: good morning."
