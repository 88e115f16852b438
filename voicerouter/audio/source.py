"""Where a session's input audio comes from: fixed-size 16 kHz mono int16 frames, as fast as
possible (replays, tests) or paced like a live microphone.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from voicerouter.audio.convert import frames, resample
from voicerouter.audio.io import read_audio
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
        tail = bytes(self.sample_rate * self.tail_silence_ms // 1000 * 2)
        frame_s = self.frame_ms / 1000
        loop = asyncio.get_running_loop()
        t0 = loop.time()  # the loop's clock is monotonic
        for i, frame in enumerate(frames(self.pcm + tail, self.frame_ms, self.sample_rate)):
            if self.realtime:
                # A microphone delivers a frame once it has been recorded, i.e. at its end; sleeping
                # to that due time (not a fixed step) keeps delays from accumulating.
                delay = t0 + (i + 1) * frame_s - loop.time()
                await asyncio.sleep(max(0.0, delay))
            else:
                await asyncio.sleep(0)
            yield frame


class FileSource(PcmSource):
    """An audio file (any format `read_audio` accepts) as a source; the file is read at once, so
    errors surface when the source is created."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        frame_ms: int = 30,
        realtime: bool = False,
        tail_silence_ms: int = 1000,
    ) -> None:
        chunk = read_audio(path)
        super().__init__(
            chunk.pcm,
            sample_rate=chunk.sample_rate,
            frame_ms=frame_ms,
            realtime=realtime,
            tail_silence_ms=tail_silence_ms,
            name=os.fspath(path),
        )
        self.path = path
