"""Hostile audio files: refused unread with a clear message, or streamed with bounded memory."""

from __future__ import annotations

import asyncio
import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicerouter.audio.io import open_audio, read_audio
from voicerouter.audio.source import FileSource
from voicerouter.errors import AudioFileError


def sparse_wav(path: Path, *, data_bytes: int, rate: int = 16000, channels: int = 1, bits: int = 16, fmt: int = 1) -> Path:
    """A WAV whose header is valid and whose (sparse, all-zero) data really is `data_bytes` long."""
    block = channels * bits // 8
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, fmt, channels, rate, rate * block, block, bits)
    header += b"data" + struct.pack("<I", data_bytes)
    with path.open("wb") as f:
        f.write(header)
        f.truncate(len(header) + data_bytes)
    return path


def test_a_2_gb_wav_is_refused_before_reading(tmp_path):
    path = sparse_wav(tmp_path / "huge.wav", data_bytes=2_000_000_000)
    tracemalloc.start()
    with pytest.raises(AudioFileError, match=r"huge.wav: declares 17.4 hours of audio"):
        open_audio(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5_000_000


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": 200, "data_bytes": 400 * 100}, "declares 200 channels"),
        ({"rate": 200, "data_bytes": 4000}, "sample rate of 200 Hz"),
        ({"rate": 4_000_000, "data_bytes": 4000}, "sample rate of 4000000 Hz"),
    ],
)
def test_absurd_headers_are_refused(tmp_path, kwargs, message):
    with pytest.raises(AudioFileError) as info:
        open_audio(sparse_wav(tmp_path / "odd.wav", **kwargs))
    assert message in str(info.value) and "odd.wav" in str(info.value)


def test_long_files_stream_in_bounded_memory(tmp_path):
    # 1.5 hours of 48 kHz stereo (1 GB on disk, sparse): frames come from disk a block at a time.
    path = sparse_wav(tmp_path / "long.wav", data_bytes=48000 * 4 * 5400, rate=48000, channels=2)
    source = FileSource(path, frame_ms=30)
    assert source.duration_s == pytest.approx(5400)

    async def first_frames(n: int) -> int:
        count = 0
        async for frame in source.frames():
            assert len(frame) == 960
            count += 1
            if count == n:
                break
        return count

    tracemalloc.start()
    assert asyncio.run(first_frames(3000)) == 3000  # 90 s of audio, ~17 MB of file
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 12_000_000


def test_streamed_frames_match_the_whole_file_read(tmp_path):
    rate = 44100
    t = np.arange(int(rate * 2.3)) / rate
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)], axis=1)
    path = tmp_path / "tone.wav"
    sf.write(path, stereo, rate, subtype="PCM_16")
    whole = read_audio(path).pcm
    source = FileSource(path, frame_ms=20, tail_silence_ms=0)

    async def collect() -> bytes:
        return b"".join([frame async for frame in source.frames()])

    streamed = asyncio.run(collect())
    assert streamed[: len(whole)] == whole and set(streamed[len(whole):]) <= {0}
    assert source.pcm == streamed[: len(source.pcm)] and len(source.pcm) >= len(whole)


def test_nan_and_infinite_samples_are_named(tmp_path, recwarn):
    data = np.zeros(16000, dtype=np.float32)
    data[8000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioFileError, match=r"nan.wav: contains NaN or infinite samples \(the first at 0.500 s\)"):
        FileSource(path)
    data[8000] = np.inf
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioFileError, match="NaN or infinite"):
        read_audio(path)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_a_fifo_is_not_called_empty_and_is_never_opened(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioFileError) as info:
        open_audio(fifo)  # would block forever if it opened the pipe
    assert "not a regular file" in str(info.value) and "0 bytes" not in str(info.value)
