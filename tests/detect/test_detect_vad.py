from pathlib import Path

import numpy as np
import pytest

from voicerouter.audio.convert import frames
from voicerouter.audio.io import read_audio
from voicerouter.config.schema import VadConfig
from voicerouter.detect.vad import VadUpdate, VoiceActivityDetector

RATE = 16000
JFK = read_audio(Path(__file__).resolve().parent.parent / "fixtures" / "jfk.flac").pcm


def seg(a: float, b: float) -> bytes:
    """A slice of the JFK speech, in seconds."""
    return JFK[int(a * RATE) * 2 : int(b * RATE) * 2]


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


def run(vad: VoiceActivityDetector, pcm: bytes) -> list[VadUpdate]:
    return [vad.process(f) for f in frames(pcm, vad.frame_ms)]


def regions(updates: list[VadUpdate]) -> list[tuple[float, float]]:
    starts = [u.speech_start_s for u in updates if u.started]
    ends = [u.speech_end_s for u in updates if u.ended]
    return list(zip(starts, ends, strict=False))


def test_speech_region_is_found_with_timestamps():
    # "And so my fellow Americans", padded by silence on both sides.
    pcm = silence(0.5) + seg(0.3, 2.1) + silence(1.0)
    updates = run(VoiceActivityDetector(VadConfig()), pcm)
    found = regions(updates)
    assert len(found) == 1
    start, end = found[0]
    assert 0.45 <= start <= 0.6
    assert 2.1 <= end <= 2.35  # real speech ends at 2.3 s
    ended = next(u for u in updates if u.ended)
    assert ended.t == pytest.approx(end + 0.15, abs=1e-6)  # stop_ms after the last voiced frame
    assert not ended.speaking
    assert all(u.speaking for u in updates if start + 0.1 < u.t < end)


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_every_frame_size_finds_the_same_speech(frame_ms):
    pcm = silence(0.3) + seg(0.3, 2.1) + silence(0.6)
    found = regions(run(VoiceActivityDetector(VadConfig(frame_ms=frame_ms)), pcm))
    assert len(found) == 1
    assert found[0][0] == pytest.approx(0.3, abs=0.1)
    assert found[0][1] == pytest.approx(2.1, abs=0.2)


def test_preroll_holds_audio_before_the_first_voiced_frame():
    pcm = silence(0.5) + seg(0.3, 2.1) + silence(0.5)
    vad = VoiceActivityDetector(VadConfig(preroll_ms=300))
    updates = run(vad, pcm)
    first = next(u for u in updates if u.started)
    start_byte = int(round((first.speech_start_s - 0.3) * RATE)) * 2
    end_byte = int(round(first.t * RATE)) * 2
    assert first.preroll == pcm[start_byte:end_byte]
    # The pre-roll reaches back before the speech: the first syllable cannot be clipped.
    assert len(first.preroll) >= int(0.3 * RATE) * 2
    assert all(u.preroll == b"" for u in updates if not u.started)


def test_stop_hysteresis_bridges_short_gaps():
    pcm = silence(0.3) + seg(0.3, 1.2) + silence(0.12) + seg(1.2, 2.1) + silence(0.5)
    assert len(regions(run(VoiceActivityDetector(VadConfig(stop_ms=150)), pcm))) == 1
    assert len(regions(run(VoiceActivityDetector(VadConfig(stop_ms=60)), pcm))) == 2


def test_silence_and_faint_noise_are_not_speech():
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(RATE * 2) * 10 ** (-60 / 20) * 32768).astype("<i2").tobytes()
    updates = run(VoiceActivityDetector(VadConfig()), silence(1.0) + noise + silence(0.5))
    assert not any(u.is_speech_frame for u in updates)
    assert not any(u.started for u in updates)


def test_time_advances_per_frame_and_reset_restarts():
    vad = VoiceActivityDetector(VadConfig(frame_ms=20))
    updates = run(vad, silence(0.2))
    assert [round(u.t, 3) for u in updates] == [round(0.02 * (i + 1), 3) for i in range(10)]
    run(vad, seg(0.3, 1.0))
    assert vad.speaking
    vad.reset()
    assert vad.t == 0 and not vad.speaking


def test_wrong_frame_size_is_rejected_clearly():
    vad = VoiceActivityDetector(VadConfig(frame_ms=30))
    with pytest.raises(ValueError, match="960 bytes .*30 ms.*got 640"):
        vad.process(bytes(640))
    with pytest.raises(ValueError, match="sample rate"):
        VoiceActivityDetector(VadConfig(), sample_rate=22050)


def test_other_sample_rates_work():
    vad = VoiceActivityDetector(VadConfig(), sample_rate=8000)
    pcm8k = np.frombuffer(seg(0.3, 2.1), dtype="<i2")[::2].tobytes()  # crude decimation is enough for a VAD
    updates = [vad.process(f) for f in frames(silence(0.15) + pcm8k + silence(0.4), 30, 8000)]
    assert len(regions(updates)) == 1
