"""PCM conversions the pipeline needs: any sample format to mono int16, resampling, framing, levels.

All PCM bytes here are signed 16-bit little-endian mono, the format `AudioChunk` carries.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator

import numpy as np
import soxr

_LITTLE_ENDIAN = sys.byteorder == "little"  # soxr's int16 output is native; PCM here is little-endian
SILENCE_DBFS = -120.0  # what `rms_dbfs` reports for digital silence (finite, so it fits in JSON)
_INT16_MAX = 32767


def to_mono_int16(data: np.ndarray, channels: int | None = None) -> np.ndarray:
    """Downmix `data` to mono and convert it to int16, clipping out-of-range values.

    `data` is 1-D (interleaved when `channels` > 1) or 2-D `(frames, channels)`. Accepted dtypes:
    float (full scale is +-1.0), int8, uint8 (offset binary, as in 8-bit WAV), int16, int32
    (24-bit audio is expected left-aligned in int32, as soundfile returns it).
    """
    arr = np.asarray(data)
    if arr.ndim == 1:
        n = channels or 1
        if n < 1 or arr.size % n:
            raise ValueError(f"{arr.size} samples cannot be split into {n} channels")
        arr = arr.reshape(-1, n)
    elif arr.ndim == 2:
        if channels is not None and arr.shape[1] != channels:
            raise ValueError(f"data has {arr.shape[1]} channels, expected {channels}")
    else:
        raise ValueError(f"audio data must be 1-D or 2-D, got {arr.ndim} dimensions")

    # Work in float64 scaled to int16 full scale: summing channels in int16 would overflow.
    kind = arr.dtype
    if kind.kind == "f":
        scaled = arr.astype(np.float64) * 32768.0
    elif kind == np.int8:
        scaled = arr.astype(np.float64) * 256.0
    elif kind == np.uint8:
        scaled = (arr.astype(np.float64) - 128.0) * 256.0
    elif kind == np.int16:
        if arr.shape[1] == 1:
            return np.ascontiguousarray(arr[:, 0])
        scaled = arr.astype(np.float64)
    elif kind == np.int32:
        scaled = arr.astype(np.float64) / 65536.0
    else:
        raise ValueError(f"unsupported sample type {kind}; use float, int8, uint8, int16 or int32")

    mono = scaled.mean(axis=1) if scaled.shape[1] > 1 else scaled[:, 0]
    return np.clip(np.rint(mono), -32768, _INT16_MAX).astype(np.int16)


def int24_to_int32(raw: bytes) -> np.ndarray:
    """Packed little-endian 24-bit samples (as some devices deliver them) to left-aligned int32,
    the layout `to_mono_int16` expects for 24-bit audio."""
    if len(raw) % 3:
        raise ValueError(f"24-bit data must be a multiple of 3 bytes, got {len(raw)}")
    b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.uint32)
    return ((b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)).view(np.int32)


def float_to_int16(data: np.ndarray) -> np.ndarray:
    """Mono float (+-1.0 full scale) to int16 with clipping."""
    return np.clip(np.rint(np.asarray(data, dtype=np.float64) * 32768.0), -32768, _INT16_MAX).astype(np.int16)


def _samples(pcm: bytes) -> np.ndarray:
    if len(pcm) % 2:
        raise ValueError(f"PCM16 data must have an even number of bytes, got {len(pcm)}")
    return np.frombuffer(pcm, dtype="<i2")


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Resample a whole piece of mono int16 PCM (use `StreamResampler` for chunked audio)."""
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
    x = _samples(pcm)
    if src_rate == dst_rate or x.size == 0:
        return bytes(pcm)
    return soxr.resample(x, src_rate, dst_rate, quality="HQ").astype("<i2").tobytes()


class StreamResampler:
    """Resample mono int16 audio that arrives in chunks (mic blocks, TTS chunks) without seams.

    Chunks may have odd byte lengths; a split sample is carried over to the next chunk.
    Call `flush()` once at the end of the stream to get the resampler's delayed tail.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._carry = b""
        self._stream: soxr.ResampleStream | None = None
        self._new_stream()

    def _new_stream(self) -> None:
        self._stream = (
            None
            if self.src_rate == self.dst_rate
            else soxr.ResampleStream(self.src_rate, self.dst_rate, 1, dtype="int16", quality="HQ")
        )

    def process(self, pcm: bytes) -> bytes:
        # The common case (whole samples, nothing carried) copies nothing before the resampler: this
        # runs for every 20 ms frame of every live call.
        data = self._carry + pcm if self._carry else pcm
        if len(data) % 2:
            cut = len(data) - 1
            data, self._carry = data[:cut], data[cut:]
        else:
            self._carry = b""
        if self._stream is None or not data:
            return bytes(data)
        out = self._stream.resample_chunk(np.frombuffer(data, dtype="<i2"))
        return out.tobytes() if _LITTLE_ENDIAN else out.astype("<i2").tobytes()

    def flush(self) -> bytes:
        """End the stream: return what the resampler still holds; the object can then start anew."""
        self._carry = b""  # half a sample at the very end cannot be played
        if self._stream is None:
            return b""
        out = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True).astype("<i2").tobytes()
        self._new_stream()
        return out


def frame_bytes(frame_ms: int, sample_rate: int = 16000) -> int:
    """Bytes in one mono int16 frame of `frame_ms` milliseconds."""
    return sample_rate * frame_ms // 1000 * 2


def frames(pcm: bytes, frame_ms: int, sample_rate: int = 16000) -> Iterator[bytes]:
    """Split mono int16 PCM into frames of exactly `frame_ms`; the last partial frame is zero-padded."""
    size = frame_bytes(frame_ms, sample_rate)
    if size <= 0:
        raise ValueError(f"frame of {frame_ms} ms at {sample_rate} Hz holds no samples")
    for start in range(0, len(pcm), size):
        frame = pcm[start : start + size]
        if len(frame) < size:
            frame = frame + bytes(size - len(frame))
        yield frame


def rms_dbfs(pcm: bytes) -> float:
    """RMS level in dBFS (0 = a full-scale square wave); `SILENCE_DBFS` for empty or silent input."""
    x = _samples(pcm)
    if x.size == 0:
        return SILENCE_DBFS
    # One float64 dot product (exact: the sum of squares of int16 stays far below 2**53); it runs
    # for every 20 ms frame of every live call, where np.mean(np.square()) cost four times as much.
    f = x.astype(np.float64)
    rms = math.sqrt(float(f @ f) / x.size)
    if rms <= 0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(rms / 32768.0))
