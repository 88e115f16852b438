"""Where a session's input audio comes from: fixed-size 16 kHz mono int16 frames, as fast as
possible (replays, tests) or paced like a live microphone.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import soxr

from voicerouter.audio.convert import float_to_int16, frame_bytes, frames, resample
from voicerouter.audio.io import open_audio, read_blocks
from voicerouter.providers.base import PIPELINE_RATE


@runtime_checkable
class AudioSource(Protocol):
    """Where a session's audio comes from, whatever the transport (file, microphone, phone call).

    A stream of equally sized frames of mono int16 PCM at `sample_rate` (always 16 kHz).
    `realtime` says whether frames arrive at the pace they were spoken (a microphone, a call):
    then the session runs against the wall clock. A source that is not real time (a file read
    as fast as possible) makes the session run in lockstep on the audio clock, which is what
    keeps replays deterministic.
    """

    sample_rate: int
    frame_ms: int
    realtime: bool
    name: str  # for events and reports, e.g. a file path or "mic:<device>"

    def frames(self) -> AsyncIterator[bytes]:
        """Yield frames of exactly `frame_ms`; the iterator ends when the input ends."""
        ...


class PcmSource:
    """In-memory audio as a source.

    `realtime=True` paces frames against the monotonic clock, each delivered when a microphone
    would have finished recording it, so a replay behaves like live input; otherwise frames come as fast as the consumer takes them
    (still yielding to the event loop after each frame). `tail_silence_ms` of zeros are appended
    so the turn detector sees the silence that ends the last turn.
    """

    def __init__(
        self,
        pcm: bytes,
        *,
        sample_rate: int = PIPELINE_RATE,
        frame_ms: int = 30,
        realtime: bool = False,
        tail_silence_ms: int = 1000,
        name: str = "memory",
    ) -> None:
        if frame_ms <= 0:
            raise ValueError(f"frame_ms must be positive, got {frame_ms}")
        if tail_silence_ms < 0:
            raise ValueError(f"tail_silence_ms must not be negative, got {tail_silence_ms}")
        self.sample_rate = PIPELINE_RATE
        self.frame_ms = frame_ms
        self.realtime = realtime
        self.tail_silence_ms = tail_silence_ms
        self.name = name
        self.pcm = resample(pcm, sample_rate, PIPELINE_RATE)

    @property
    def duration_s(self) -> float:
        """Length of the audio itself, without the appended silence."""
        return len(self.pcm) / 2 / self.sample_rate

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.duration_s:.2f} s)"

    async def frames(self) -> AsyncIterator[bytes]:
        async for frame in self._paced(frames(self.pcm, self.frame_ms, self.sample_rate)):
            yield frame

    async def _paced(self, audio: Iterable[bytes]) -> AsyncIterator[bytes]:
        """`audio`'s frames, then the tail silence: paced like a microphone, or as fast as taken."""
        tail = frames(bytes(self.sample_rate * self.tail_silence_ms // 1000 * 2), self.frame_ms, self.sample_rate)
        frame_s = self.frame_ms / 1000
        loop = asyncio.get_running_loop()
        t0 = loop.time()  # the loop's clock is monotonic
        for i, frame in enumerate(itertools.chain(audio, tail)):
            if self.realtime:
                # A microphone delivers a frame once it has been recorded, i.e. at its end; sleeping
                # to that due time (not a fixed step) keeps delays from accumulating.
                delay = t0 + (i + 1) * frame_s - loop.time()
                await asyncio.sleep(max(0.0, delay))
            else:
                await asyncio.sleep(0)
            yield frame


class FileSource(PcmSource):
    """An audio file (any format libsndfile reads) as a source. The file is checked when the
    source is created (so errors surface before the session starts) and then streamed from disk
    in blocks: memory stays bounded whatever the file's size. `pcm` keeps the first
    `KEEP_SECONDS` of what was delivered, for timelines."""

    KEEP_SECONDS = 600

    def __init__(
        self,
        path: str | os.PathLike[str],
        frame_ms: int = 30,
        realtime: bool = False,
        tail_silence_ms: int = 1000,
    ) -> None:
        self.info = open_audio(path)
        super().__init__(b"", frame_ms=frame_ms, realtime=realtime, tail_silence_ms=tail_silence_ms, name=os.fspath(path))
        self.path = path
        self._kept = bytearray()

    @property
    def duration_s(self) -> float:
        return self.info.frames / self.info.samplerate

    @property
    def pcm(self) -> bytes:  # type: ignore[override]
        return bytes(self._kept)

    @pcm.setter
    def pcm(self, value: bytes) -> None:
        pass  # the file is the audio; nothing is held in memory

    async def frames(self) -> AsyncIterator[bytes]:
        async for frame in self._paced(self._file_frames()):
            yield frame

    def _file_frames(self) -> Iterator[bytes]:
        rate = self.info.samplerate
        resampler = None if rate == PIPELINE_RATE else soxr.ResampleStream(rate, PIPELINE_RATE, 1, dtype="float32", quality="HQ")
        size = frame_bytes(self.frame_ms, self.sample_rate)
        keep = self.KEEP_SECONDS * self.sample_rate * 2
        pending = bytearray()
        blocks = read_blocks(self.path, self.info)
        for block in itertools.chain(blocks, [None]):
            if block is None:
                if resampler is None:
                    break
                block, last = np.zeros(0, dtype=np.float32), True
            else:
                last = False
            mono = block if resampler is None else resampler.resample_chunk(block, last=last)
            pcm = float_to_int16(mono).astype("<i2").tobytes()
            if len(self._kept) < keep:
                self._kept += pcm[: keep - len(self._kept)]
            pending += pcm
            while len(pending) >= size:
                yield bytes(pending[:size])
                del pending[:size]
        if pending:
            yield bytes(pending) + bytes(size - len(pending))
