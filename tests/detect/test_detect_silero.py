"""Silero VAD (`vad: {engine: silero}`): robust to noise where WebRTC VAD is not, and deterministic."""

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from voicerouter.audio.convert import frames
from voicerouter.audio.io import read_audio
from voicerouter.config.schema import VadConfig
from voicerouter.detect.vad import VoiceActivityDetector

pytest.importorskip("onnxruntime")
RATE = 16000
FRAME_MS = 30
JFK = read_audio(Path(__file__).resolve().parent.parent / "fixtures" / "jfk.flac").pcm


def speech_with_gaps() -> tuple[np.ndarray, np.ndarray, float]:
    """2 s silence, JFK, 2 s silence, JFK, 2 s silence; per frame: 1 speech, 0 non-speech, -1 unsure;
    and the speech's mean power (the S of the SNR)."""
    speech = np.frombuffer(JFK, "<i2").astype(np.float32) / 32768
    gap = np.zeros(2 * RATE, np.float32)
    signal = np.concatenate([gap, speech, gap, speech, gap])
    size = RATE * FRAME_MS // 1000
    labels = []
    for i in range(len(signal) // size):
        frame = signal[i * size : (i + 1) * size]
        if not frame.any():
            labels.append(0)
        else:  # the speaker's own pauses are neither: only clearly voiced frames count as speech
            level = 10 * np.log10(np.mean(frame**2) + 1e-12)
            labels.append(1 if level > -40 else -1)
    return signal, np.array(labels), float(np.mean(speech**2))


def flagged(engine: str, test_signal: tuple[np.ndarray, np.ndarray, float], snr_db: float) -> tuple[float, float]:
    """(share of speech frames flagged, share of non-speech frames flagged) with white noise at `snr_db`."""
    signal, labels, speech_power = test_signal
    noise = np.random.default_rng(0).normal(0, np.sqrt(speech_power / 10 ** (snr_db / 10)), signal.size)
    pcm = (np.clip(signal + noise, -1, 1) * 32767).astype("<i2").tobytes()
    vad = VoiceActivityDetector(VadConfig(engine=engine, frame_ms=FRAME_MS))
    verdicts = np.array([vad.process(f).is_speech_frame for f in frames(pcm, FRAME_MS)])[: labels.size]
    return float(verdicts[labels == 1].mean()), float(verdicts[labels == 0].mean())


@pytest.fixture(scope="module")
def signal():
    return speech_with_gaps()


@pytest.mark.parametrize("snr_db", [20, 5, 0])
def test_silero_keeps_finding_speech_and_ignoring_noise(signal, snr_db):
    speech, non_speech = flagged("silero", signal, snr_db)
    assert speech >= 0.7, f"only {speech:.0%} of speech frames flagged at {snr_db} dB SNR"
    assert non_speech <= 0.05, f"{non_speech:.0%} of noise-only frames flagged at {snr_db} dB SNR"


def test_webrtc_takes_loud_noise_for_speech(signal):
    # Why silero is offered: at 5 dB SNR WebRTC VAD calls the noise itself speech.
    _, non_speech = flagged("webrtc", signal, 5)
    assert non_speech >= 0.5


def test_silero_regions_depend_only_on_the_audio():
    pcm = bytes(RATE) + JFK[: 4 * RATE * 2] + bytes(2 * RATE)

    def regions() -> list[tuple[float | None, float | None]]:
        vad = VoiceActivityDetector(VadConfig(engine="silero"))
        updates = [vad.process(f) for f in frames(pcm, 30)]
        return [(u.speech_start_s, u.speech_end_s) for u in updates if u.ended]

    first = regions()
    assert first and first == regions()
    assert first[0][0] == pytest.approx(1.0, abs=0.35)


def test_silero_reset_forgets_the_previous_input():
    vad = VoiceActivityDetector(VadConfig(engine="silero"))
    pcm = bytes(RATE) + JFK[: 3 * RATE * 2] + bytes(RATE)
    first = [vad.process(f).is_speech_frame for f in frames(pcm, 30)]
    vad.reset()
    assert [vad.process(f).is_speech_frame for f in frames(pcm, 30)] == first


def test_threshold_is_a_silero_setting():
    assert VadConfig(engine="silero", threshold=0.3).threshold == 0.3
    with pytest.raises(ValidationError, match="threshold"):
        VadConfig(threshold=0.3)
    with pytest.raises(ValidationError):
        VadConfig(engine="silero", threshold=1.5)


def test_silero_refuses_rates_it_has_no_model_for():
    with pytest.raises(ValueError, match="8000 or 16000"):
        VoiceActivityDetector(VadConfig(engine="silero"), sample_rate=48000)


def test_a_missing_model_says_how_to_install_it(monkeypatch):
    import importlib.util

    from voicerouter.detect import silero
    from voicerouter.errors import ConfigError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="silero") as info:
        silero.model_path()
    assert "--no-deps" in (info.value.hint or "")


def test_silero_is_used_without_importing_torch():
    import sys

    VoiceActivityDetector(VadConfig(engine="silero")).process(bytes(960))
    assert "silero_vad" not in sys.modules and "torch" not in sys.modules
