import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicerouter.audio.io import read_audio, write_wav
from voicerouter.errors import AudioFileError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def tone(rate: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float64)


def peak_freq(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.argmax(np.abs(np.fft.rfft(x))) * rate / x.size)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_read_audio_converts_any_rate_and_sample_format(tmp_path, rate, subtype):
    path = tmp_path / f"tone_{rate}_{subtype}.wav"
    # PCM_U8 only exists in WAV as unsigned 8-bit.
    sf.write(path, tone(rate, 0.5), rate, subtype=subtype)
    chunk = read_audio(path)
    assert chunk.sample_rate == 16000
    assert abs(chunk.samples - 8000) <= 1
    x = np.frombuffer(chunk.pcm, dtype="<i2").astype(np.float64)
    # Amplitude 0.5 survives every format (8-bit is coarse, hence the tolerance).
    assert np.max(np.abs(x[500:-500])) / 32768 == pytest.approx(0.5, abs=0.02)
    assert peak_freq(chunk.pcm, 16000) == pytest.approx(440, abs=3)


def test_read_audio_downmixes_stereo(tmp_path):
    left = tone(44100, 0.25, amp=0.8)
    right = np.zeros_like(left)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_24")
    chunk = read_audio(path)
    assert abs(chunk.samples - 4000) <= 1
    x = np.frombuffer(chunk.pcm, dtype="<i2").astype(np.float64)
    assert np.max(np.abs(x[200:-200])) / 32768 == pytest.approx(0.4, abs=0.01)


def test_read_audio_clips_float_overshoot(tmp_path):
    path = tmp_path / "loud.wav"
    sf.write(path, np.full(1600, 1.5), 16000, subtype="FLOAT")
    x = np.frombuffer(read_audio(path).pcm, dtype="<i2")
    assert x.max() == 32767


def test_read_audio_ogg_and_real_speech_fixture(tmp_path):
    path = tmp_path / "tone.ogg"
    sf.write(path, tone(48000, 0.5), 48000, format="OGG", subtype="VORBIS")
    assert abs(read_audio(path).duration_s - 0.5) < 0.01
    jfk = read_audio(FIXTURES / "jfk.flac")
    assert jfk.sample_rate == 16000 and jfk.samples == 176000


def test_write_wav_round_trip_creates_directories(tmp_path):
    pcm = (tone(22050, 0.2) * 32767).astype("<i2").tobytes()
    path = write_wav(tmp_path / "a" / "b" / "out.wav", pcm, 22050)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype, info.format) == (22050, 1, "PCM_16", "WAV")
    data, rate = sf.read(path, dtype="int16")
    assert rate == 22050 and data.tobytes() == pcm
    assert read_audio(path).samples == 3200


def test_write_wav_into_a_file_path_fails_clearly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AudioFileError, match="cannot write WAV file") as info:
        write_wav(blocker / "out.wav", bytes(4), 16000)
    assert str(blocker / "out.wav") in str(info.value)


def _valid_wav_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "valid.wav"
    sf.write(path, tone(16000, 1.0), 16000, subtype="PCM_16")
    return path.read_bytes()


@pytest.mark.parametrize(
    ("name", "make", "expect"),
    [
        ("missing.wav", None, "not found"),
        ("empty.wav", lambda tmp, p: p.write_bytes(b""), "empty"),
        ("noise.wav", lambda tmp, p: p.write_bytes(np.random.default_rng(1).bytes(4000)), "not a readable audio file"),
        ("notes.wav", lambda tmp, p: p.write_text("hello, I am not audio\n" * 20), "not a readable audio file"),
        ("header.wav", lambda tmp, p: p.write_bytes(_valid_wav_bytes(tmp)[:30]), "not a readable audio file"),
        ("cut.wav", lambda tmp, p: p.write_bytes(_valid_wav_bytes(tmp)[:5000]), "truncated"),
        ("zero.wav", lambda tmp, p: sf.write(p, np.zeros(0), 16000), "no audio"),
        ("adir.wav", lambda tmp, p: p.mkdir(), "directory"),
    ],
)
def test_read_audio_bad_files_raise_audio_file_error_naming_the_file(tmp_path, name, make, expect):
    path = tmp_path / name
    if make:
        make(tmp_path, path)
    with pytest.raises(AudioFileError) as info:
        read_audio(path)
    message = str(info.value)
    assert str(path) in message
    assert expect in message
    assert info.value.hint  # every failure says how to fix it


def test_truncated_flac_raises(tmp_path):
    data = (FIXTURES / "jfk.flac").read_bytes()
    path = tmp_path / "half.flac"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioFileError, match="half.flac"):
        read_audio(path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_raises(tmp_path):
    path = tmp_path / "secret.wav"
    path.write_bytes(_valid_wav_bytes(tmp_path))
    path.chmod(0)
    with pytest.raises(AudioFileError, match="permission denied"):
        read_audio(path)
