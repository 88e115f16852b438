from pathlib import Path

import numpy as np
import pytest

from voicerouter.audio.convert import frames
from voicerouter.audio.io import read_audio
from voicerouter.config.schema import TurnConfig, VadConfig
from voicerouter.detect.turn import TurnDecision, TurnDetector
from voicerouter.detect.vad import VoiceActivityDetector

RATE = 16000
JFK = read_audio(Path(__file__).resolve().parent.parent / "fixtures" / "jfk.flac").pcm
# Word boundaries in the JFK recording (seconds).
AMERICANS = (0.3, 2.1)  # "And so my fellow Americans"
ASK_NOT = (3.2, 4.4)  # "ask not"
WHAT_YOUR_COUNTRY = (5.35, 7.6)  # "what your country can do for you"


def seg(span: tuple[float, float]) -> bytes:
    a, b = span
    return JFK[int(a * RATE) * 2 : int(b * RATE) * 2]


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


def noise(seconds: float, dbfs: float, pink: bool, seed: int = 3) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(seconds * RATE))
    if pink:
        spec = np.fft.rfft(x)
        f = np.arange(spec.size, dtype=np.float64)
        f[0] = 1.0
        x = np.fft.irfft(spec / np.sqrt(f), n=x.size)
    x = x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20) * 32768
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


def detect(
    pcm: bytes, turn: TurnConfig | None = None, vad: VadConfig | None = None, partials: dict[float, str] | None = None
) -> list[TurnDecision]:
    """Run VAD + turn detection over `pcm`; `partials` maps audio times to partial transcripts."""
    v = VoiceActivityDetector(vad or VadConfig())
    td = TurnDetector(turn or TurnConfig())
    pending = sorted((partials or {}).items())
    out = []
    for f in frames(pcm, v.frame_ms):
        u = v.process(f)
        while pending and pending[0][0] <= u.t:
            td.on_partial(pending.pop(0)[1])
        if d := td.feed(u):
            out.append(d)
    if d := td.finish(v.t, v.speaking):
        out.append(d)
    return out


def turns(decisions: list[TurnDecision]) -> list[TurnDecision]:
    return [d for d in decisions if not d.discarded]


# --- on real speech ---------------------------------------------------------------------------


def test_a_short_pause_inside_speech_keeps_one_turn():
    pcm = silence(0.5) + seg(AMERICANS) + silence(0.25) + seg(ASK_NOT) + silence(1.5)
    found = turns(detect(pcm))
    assert len(found) == 1
    assert found[0].reason == "silence"
    assert found[0].start_s < 0.6
    speech_end = 0.5 + 1.8 + 0.25 + 1.2
    assert found[0].speech_end_s == pytest.approx(speech_end, abs=0.2)


def test_a_long_silence_between_speech_makes_two_turns():
    first_end = 0.5 + 1.8
    second_start = first_end + 1.5
    pcm = silence(0.5) + seg(AMERICANS) + silence(1.5) + seg(WHAT_YOUR_COUNTRY) + silence(1.5)
    found = turns(detect(pcm))
    assert [d.reason for d in found] == ["silence", "silence"]
    assert found[0].end_s < second_start
    assert found[1].start_s == pytest.approx(second_start, abs=0.15)


@pytest.mark.parametrize("span", [AMERICANS, ASK_NOT, WHAT_YOUR_COUNTRY])
def test_turn_ends_within_about_600_ms_of_real_speech_end(span):
    real_end = 0.5 + span[1] - span[0]
    found = turns(detect(silence(0.5) + seg(span) + silence(2.0)))
    assert len(found) == 1
    assert real_end <= found[0].end_s <= real_end + 0.65
    assert found[0].delay_ms == pytest.approx((found[0].end_s - found[0].speech_end_s) * 1000)


def test_whole_recording_gives_one_turn_per_phrase():
    found = turns(detect(JFK + silence(1.0)))
    # The speaker pauses about a second between the four phrases.
    assert len(found) == 4
    assert all(d.reason == "silence" for d in found)


@pytest.mark.parametrize("pink", [False, True])
@pytest.mark.parametrize("dbfs", [-60.0, -45.0])
def test_low_level_noise_alone_is_no_turn(pink, dbfs):
    assert turns(detect(noise(4.0, dbfs, pink) + silence(1.0))) == []


def test_a_click_is_no_turn():
    click = np.zeros(int(0.01 * RATE), dtype="<i2")
    click[:40] = [30000, -30000] * 20
    assert turns(detect(silence(1.0) + click.tobytes() + silence(1.0))) == []


def test_speech_shorter_than_min_turn_is_discarded_with_a_decision():
    # 180 ms of real speech: long enough for the VAD, too short for a turn.
    pcm = silence(0.5) + seg((0.35, 0.53)) + silence(1.5)
    decisions = detect(pcm, vad=VadConfig(start_ms=60))
    assert decisions and all(d.discarded and d.reason == "too_short" for d in decisions)
    assert len(turns(detect(pcm, turn=TurnConfig(min_turn_ms=50), vad=VadConfig(start_ms=60)))) == 1


def test_input_ending_mid_speech_ends_the_turn():
    found = detect(silence(0.5) + seg(AMERICANS))
    assert [d.reason for d in found] == ["end_of_input"]


def test_max_duration_splits_long_speech():
    found = turns(detect(silence(0.2) + seg(WHAT_YOUR_COUNTRY) + silence(1.0), turn=TurnConfig(max_turn_ms=1000)))
    assert found[0].reason == "max_duration"
    assert found[0].end_s - found[0].start_s == pytest.approx(1.0, abs=0.031)
    assert found[0].delay_ms == 0
    assert len(found) >= 2
    # The rest of the speech after the last split is kept, however short.
    assert all(
        not d.discarded
        for d in detect(silence(0.2) + seg(WHAT_YOUR_COUNTRY) + silence(1.0), turn=TurnConfig(max_turn_ms=1000))
    )


def test_partial_that_ends_like_a_sentence_ends_the_turn_sooner():
    pcm = silence(0.5) + seg(WHAT_YOUR_COUNTRY) + silence(2.0)
    plain = turns(detect(pcm))[0]
    done = turns(detect(pcm, partials={1.5: "what your", 2.6: "what your country can do for you"}))[0]
    assert (plain.reason, done.reason) == ("silence", "complete_sentence")
    assert done.text == "what your country can do for you"
    assert done.end_s < plain.end_s
    assert done.delay_ms == pytest.approx(350, abs=31)


def test_partial_that_ends_on_a_conjunction_waits_longer():
    # A 900 ms pause after "and": more than the base 600 ms, less than the 1200 ms incomplete wait.
    pcm = silence(0.5) + seg(AMERICANS) + silence(0.9) + seg(ASK_NOT) + silence(2.0)
    assert len(turns(detect(pcm))) == 2
    found = turns(
        detect(pcm, partials={2.0: "and so my fellow americans and", 4.0: "and so my fellow americans and ask not"})
    )
    assert len(found) == 1
    assert found[0].reason == "complete_sentence"
    assert found[0].speech_end_s == pytest.approx(0.5 + 1.8 + 0.9 + 1.2, abs=0.2)


# --- the partial-text rules, on a synthetic timeline ----------------------------------------------


def speak(td: TurnDetector, start: float, end: float, frame: float = 0.03) -> None:
    """Drive `td` through speech from `start` to `end` the way a VAD would report it."""
    t = start
    first = True
    while t < end - 1e-9:
        t += frame
        assert td.update(t, True, first, False, speech_start_s=start) is None
        first = False


def wait_for_turn(td: TurnDetector, speech_end: float, limit: float = 5.0, frame: float = 0.03) -> TurnDecision | None:
    t = speech_end
    first = True
    while t < speech_end + limit:
        t += frame
        d = td.update(t, False, False, first, speech_end_s=speech_end)
        first = False
        if d:
            return d
    return None


@pytest.mark.parametrize(
    ("partial", "reason", "wait_ms"),
    [
        ("", "silence", 600),
        ("yes", "silence", 600),
        ("what time is it", "complete_sentence", 350),
        ("book a table for two people", "complete_sentence", 350),
        ("Is it open?", "complete_sentence", 350),
        ("Sure.", "complete_sentence", 350),
        ("I would like to", "incomplete_wait", 1200),
        ("I went there and", "incomplete_wait", 1200),
        ("so um", "incomplete_wait", 1200),
        ("Then I said, uh", "incomplete_wait", 1200),
        ("give me the", "incomplete_wait", 1200),
        ("I was thinking,", "incomplete_wait", 1200),
        ("well...", "incomplete_wait", 1200),
        ("my number is five five five", "digits_wait", 1500),
        ("my number is 555-1234", "digits_wait", 1500),
        ("the code is two oh", "digits_wait", 1500),
        ("I want five", "complete_sentence", 350),
        ("oh oh", "silence", 600),
        ("what do you think I", "silence", 600),
        ("it is", "silence", 600),
        ("and then we", "silence", 600),
        ("thank you very", "silence", 600),
        ("ask not", "silence", 600),
        ("why not", "silence", 600),
        ("thank you so much", "complete_sentence", 350),
        ("and what about you", "complete_sentence", 350),
    ],
)
def test_partial_rules(partial, reason, wait_ms):
    td = TurnDetector(TurnConfig())
    assert td.endpoint(partial) == (reason, wait_ms)
    speak(td, 1.0, 2.5)
    td.on_partial(partial)
    d = wait_for_turn(td, 2.5)
    assert d is not None
    assert d.reason == reason
    assert d.delay_ms == pytest.approx(wait_ms, abs=30.1)
    assert (d.start_s, d.speech_end_s) == (1.0, 2.5)


def test_custom_fillers_replace_the_defaults():
    td = TurnDetector(TurnConfig(fillers=["basically", "UM"]))
    assert td.endpoint("it is basically") == ("incomplete_wait", 1200)
    assert td.endpoint("so it was um") == ("incomplete_wait", 1200)
    # No longer a filler, but still not a word a sentence ends on.
    assert td.endpoint("I went there and") == ("silence", 600)


def test_min_pause_is_a_floor_for_every_wait():
    td = TurnDetector(TurnConfig(silence_ms=100, complete_silence_ms=50, min_pause_ms=400))
    assert td.endpoint("") == ("silence", 400)
    assert td.endpoint("this is done") == ("complete_sentence", 400)
    speak(td, 0.0, 1.0)
    # A 300 ms pause, then speech again: still the same turn.
    for i in range(10):
        assert td.update(1.0 + 0.03 * (i + 1), False, False, i == 0, speech_end_s=1.0) is None
    speak(td, 1.3, 2.0)
    d = wait_for_turn(td, 2.0)
    assert d is not None and d.start_s == 0.0 and d.delay_ms == pytest.approx(400, abs=30.1)


def test_pauses_shorter_than_the_wait_continue_the_turn():
    td = TurnDetector(TurnConfig())
    speak(td, 0.0, 1.0)
    td.on_partial("I want to go to")
    # 1 s pause: longer than the base wait, shorter than the incomplete wait.
    for i in range(33):
        assert td.update(1.0 + 0.03 * (i + 1), False, False, i == 0, speech_end_s=1.0) is None
    assert td.in_turn
    speak(td, 2.0, 3.0)
    td.on_partial("I want to go to the station")
    d = wait_for_turn(td, 3.0)
    assert d is not None
    assert (d.reason, d.start_s, d.speech_end_s, d.text) == (
        "complete_sentence",
        0.0,
        3.0,
        "I want to go to the station",
    )
    assert td.turns == 1 and not td.in_turn and td.partial == ""


def test_partials_outside_a_turn_are_ignored_and_each_turn_starts_fresh():
    td = TurnDetector(TurnConfig())
    td.on_partial("stale text and")
    speak(td, 0.0, 1.0)
    assert td.partial == ""
    td.on_partial("and")
    assert wait_for_turn(td, 1.0).reason == "incomplete_wait"
    speak(td, 3.0, 4.0)
    assert wait_for_turn(td, 4.0).reason == "silence"


def test_too_short_speech_by_update_and_finish():
    td = TurnDetector(TurnConfig(min_turn_ms=250))
    speak(td, 0.0, 0.15)
    d = wait_for_turn(td, 0.15)
    assert d is not None and d.reason == "too_short" and d.discarded
    assert td.turns == 0
    speak(td, 2.0, 2.1)
    d = td.finish(2.1, speaking=True)
    assert d is not None and d.reason == "too_short"
    assert td.finish(3.0) is None


def test_finish_after_speech_ended_uses_the_real_speech_end():
    td = TurnDetector(TurnConfig())
    speak(td, 0.0, 1.0)
    assert td.update(1.2, False, False, True, speech_end_s=1.0) is None
    d = td.finish(1.3)
    assert (d.reason, d.speech_end_s, d.end_s) == ("end_of_input", 1.0, 1.3)
    assert d.delay_ms == pytest.approx(300)
