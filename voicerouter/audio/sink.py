"""Where a session's output audio goes: nowhere (`NullSink`), memory (`MemorySink`, for tests
and reports) or a WAV file (`WavSink`). The speaker sink lives with the device code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from voicerouter.audio.convert import StreamResampler
from voicerouter.audio.io import write_wav
from voicerouter.providers.base import AudioChunk


@runtime_checkable
class AudioSink(Protocol):
    """Where a session's reply audio goes, whatever the transport (speaker, file, phone call).

    Chunks may come at any sample rate. A sink may queue audio ahead of playback (a speaker's
    buffer, a carrier's jitter buffer), so what was written is not what was heard: `played_s`
    says how much has really been played, as far as the sink can know (a speaker counts the
    samples its device consumed; a phone transport learns it from the carrier's `mark` echoes;
    a sink that stores audio counts it as played once written).
    """

    async def write(self, chunk: AudioChunk) -> None:
        """Queue a chunk for output; may return before it is played."""

    async def drain(self) -> None:
        """Wait until everything written so far has been played or stored."""

    def clear(self) -> None:
        """Drop audio that is queued but not yet played (barge-in)."""

    @property
    def played_s(self) -> float:
        """Seconds of audio played since the sink was opened (never counts cleared audio)."""
        ...

    async def aclose(self) -> None: ...


class NullSink:
    """Discards audio, counting how much it was given."""

    def __init__(self) -> None:
        self.samples_written = 0
        self.seconds_written = 0.0
        self.clears = 0

    async def write(self, chunk: AudioChunk) -> None:
        self.samples_written += chunk.samples
        self.seconds_written += chunk.duration_s

    async def drain(self) -> None:
        return None

    def clear(self) -> None:
        self.clears += 1

    @property
    def played_s(self) -> float:
        return self.seconds_written

    async def aclose(self) -> None:
        return None


class MemorySink:
    """Keeps all audio in memory at one output rate, resampling chunks of other rates.

    Written audio counts as played at once, so `clear()` has nothing to drop; it only counts
    barge-ins (`clears`). Chunks of one rate are resampled as a stream (no seams between TTS
    chunks); the resampler's tail is flushed by `drain()`, `aclose()`, a change of input rate,
    or reading `pcm`.
    """

    def __init__(self, sample_rate: int = 16000) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self.clears = 0
        self.chunks_written = 0
        self.seconds_written = 0.0
        self._buf = bytearray()
        self._resampler: StreamResampler | None = None
        self._closed = False

    @property
    def pcm(self) -> bytes:
        """Everything written so far, mono int16 at `sample_rate`."""
        self._flush()
        return bytes(self._buf)

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate

    def as_chunk(self) -> AudioChunk:
        return AudioChunk(self.pcm, self.sample_rate)

    async def write(self, chunk: AudioChunk) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        self.chunks_written += 1
        self.seconds_written += chunk.duration_s
        if chunk.sample_rate == self.sample_rate:
            self._flush()
            self._buf += chunk.pcm
            return
        if self._resampler is None or self._resampler.src_rate != chunk.sample_rate:
            self._flush()
            self._resampler = StreamResampler(chunk.sample_rate, self.sample_rate)
        self._buf += self._resampler.process(chunk.pcm)

    def _flush(self) -> None:
        if self._resampler is not None:
            self._buf += self._resampler.flush()
            self._resampler = None

    async def drain(self) -> None:
        self._flush()

    def clear(self) -> None:
        self.clears += 1

    @property
    def played_s(self) -> float:
        """Everything written counts as played (it is stored at once)."""
        return self.seconds_written

    async def aclose(self) -> None:
        self._flush()
        self._closed = True


class WavSink(MemorySink):
    """Collects audio like `MemorySink` and writes it as a PCM_16 WAV file on `aclose()`."""

    def __init__(self, path: str | os.PathLike[str], sample_rate: int = 22050) -> None:
        super().__init__(sample_rate)
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"WavSink({str(self.path)!r}, {self.sample_rate} Hz)"

    async def aclose(self) -> None:
        if self._closed:
            return
        await super().aclose()
        write_wav(self.path, bytes(self._buf), self.sample_rate)
