import math

import numpy as np
import pytest

from voicerouter.audio.convert import (
    SILENCE_DBFS,
    StreamResampler,
    frame_bytes,
    frames,
    int24_to_int32,
    resample,
    rms_dbfs,
    to_mono_int16,
)


def sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)


def dominant_freq(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spec) * rate / x.size)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0], dtype=np.float32),
            [0, 16384, -16384, 32767, -32768, 32767, -32768],
        ),
        (np.array([0, 64, -128, 127], dtype=np.int8), [0, 16384, -32768, 32512]),
        (np.array([128, 192, 0, 255], dtype=np.uint8), [0, 16384, -32768, 32512]),
        (np.array([0, 1234, -32768, 32767], dtype=np.int16), [0, 1234, -32768, 32767]),
        (np.array([0, 1234 << 16, -(2**31), 2**31 - 1], dtype=np.int32), [0, 1234, -32768, 32767]),
    ],
)
def test_to_mono_int16_scales_each_sample_type(data, expected):
    out = to_mono_int16(data)
    assert out.dtype == np.int16
    assert out.tolist() == expected


def test_to_mono_int16_downmixes_interleaved_and_2d_without_overflow():
    interleaved = np.array([32767, 32767, -32768, -32768, 1000, 3000], dtype=np.int16)
    assert to_mono_int16(interleaved, channels=2).tolist() == [32767, -32768, 2000]
    two_d = np.array([[0.5, -0.5], [0.25, 0.25]], dtype=np.float64)
    assert to_mono_int16(two_d).tolist() == [0, 8192]


def test_to_mono_int16_rejects_bad_shapes_and_types():
    with pytest.raises(ValueError, match="3 samples cannot be split into 2 channels"):
        to_mono_int16(np.zeros(3, dtype=np.int16), channels=2)
    with pytest.raises(ValueError, match="expected 1"):
        to_mono_int16(np.zeros((4, 2), dtype=np.int16), channels=1)
    with pytest.raises(ValueError, match="unsupported sample type"):
        to_mono_int16(np.zeros(4, dtype=np.complex64))


@pytest.mark.parametrize(
    ("src", "dst"), [(8000, 16000), (22050, 16000), (44100, 16000), (48000, 16000), (16000, 22050)]
)
def test_resample_keeps_length_and_pitch(src, dst):
    pcm = sine(440, src, 1.0).tobytes()
    out = resample(pcm, src, dst)
    assert abs(len(out) // 2 - dst) <= 1
    assert abs(dominant_freq(out, dst) - 440) < 3


def test_resample_same_rate_and_empty_are_identity():
    pcm = sine(300, 16000, 0.1).tobytes()
    assert resample(pcm, 16000, 16000) == pcm
    assert resample(b"", 8000, 16000) == b""
    with pytest.raises(ValueError, match="even number of bytes"):
        resample(b"\x00\x01\x02", 8000, 16000)


def test_stream_resampler_matches_whole_resampling_over_odd_chunks():
    pcm = sine(440, 22050, 1.0).tobytes()
    rs = StreamResampler(22050, 16000)
    # Uneven chunk sizes, some splitting a sample in half, like bytes off a socket.
    sizes = [1, 333, 4096, 7, 1000, 2048]
    out = bytearray()
    pos = 0
    i = 0
    while pos < len(pcm):
        size = sizes[i % len(sizes)]
        out += rs.process(pcm[pos : pos + size])
        pos += size
        i += 1
    out += rs.flush()
    assert abs(len(out) // 2 - 16000) <= 2
    whole = np.frombuffer(resample(pcm, 22050, 16000), dtype="<i2").astype(np.int32)
    streamed = np.frombuffer(bytes(out), dtype="<i2").astype(np.int32)
    n = min(whole.size, streamed.size)
    # Streaming must not add seams: the middle of both results agrees closely.
    assert np.max(np.abs(whole[500 : n - 500] - streamed[500 : n - 500])) < 200


def test_stream_resampler_same_rate_passes_bytes_through_and_restarts_after_flush():
    rs = StreamResampler(16000, 16000)
    assert rs.process(b"\x01") == b""
    assert rs.process(b"\x02\x03") == b"\x01\x02"
    assert rs.flush() == b""
    rs2 = StreamResampler(8000, 16000)
    first = rs2.process(sine(200, 8000, 0.2).tobytes()) + rs2.flush()
    second = rs2.process(sine(200, 8000, 0.2).tobytes()) + rs2.flush()
    assert first == second and len(first) // 2 == 3200


def test_frames_are_exact_and_last_is_zero_padded():
    pcm = bytes(range(256)) * 4  # 1024 bytes = 512 samples
    out = list(frames(pcm, 10, 16000))  # 160 samples per frame
    assert frame_bytes(10, 16000) == 320
    assert [len(f) for f in out] == [320] * 4
    assert b"".join(out)[:1024] == pcm
    assert out[-1][1024 - 960 :] == bytes(320 - (1024 - 960))
    assert list(frames(b"", 30)) == []
    assert len(next(frames(bytes(10), 30, 8000))) == 480


def test_rms_dbfs_levels():
    assert rms_dbfs(b"") == SILENCE_DBFS
    assert rms_dbfs(bytes(640)) == SILENCE_DBFS
    full_square = np.array([32767, -32768] * 100, dtype="<i2").tobytes()
    assert rms_dbfs(full_square) == pytest.approx(0.0, abs=0.01)
    half_sine = sine(1000, 16000, 1.0, amp=0.5).tobytes()
    assert rms_dbfs(half_sine) == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.1)


def test_packed_24_bit_samples_convert_via_int32():
    samples = [0, 1 << 8, -(1 << 23), (1 << 23) - 1, 0x123456]
    raw = b"".join(v.to_bytes(3, "little", signed=True) for v in samples)
    as32 = int24_to_int32(raw)
    assert as32.tolist() == [v << 8 for v in samples]
    assert to_mono_int16(as32).tolist() == [0, 1, -32768, 32767, 0x1234]  # 0x123456 / 256 rounds to nearest
    stereo = to_mono_int16(int24_to_int32(raw[:12]), channels=2)
    assert stereo.tolist() == [0, 0]  # means of (0, 1) and (min, max) round to 0
    with pytest.raises(ValueError, match="multiple of 3"):
        int24_to_int32(b"\x00\x01")
