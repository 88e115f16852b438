"""ALSA virtual microphone and speaker for end-to-end tests through real PortAudio.

ALSA's `file` plugin over the `null` PCM gives a capture device that reads raw PCM from an
`infile` and a playback device that writes what it plays to a `file`. `null` has no clock, so
such devices run as fast as the CPU allows; to make them behave like real hardware both files
are FIFOs that this module feeds and drains in real time from threads:

- the microphone FIFO gets one capture block (`block_frames`) per block period. PortAudio reads
  exactly one block per read when the stream is opened with that blocksize and low latency, and
  a write of at most PIPE_BUF bytes is atomic, so every read is whole (a short read would leave
  stale samples in the capture buffer);
- the speaker FIFO is read at the stream rate, so ALSA (and the sink's callback) block like a
  sound card's clock would make them.

The devices are defined in `<root>/home/.asoundrc`; run the program under test with `env()`
(HOME points there), in a subprocess, so PortAudio enumerates them when it initialises.
"""

from __future__ import annotations

import errno
import os
import select
import sys
import threading
import time
from pathlib import Path

import pytest

if sys.platform.startswith("linux"):
    import fcntl

# Every test that runs a program on the virtual devices; they need Linux's ALSA (and FIFOs).
requires_alsa = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ALSA virtual devices need Linux")

F_SETPIPE_SZ = 1031  # Linux fcntl: shrink the pipe so little audio hides in it
PIPE_SIZE = 4096

MIC = "vr_mic"
SPEAKER = "vr_spk"


def asoundrc(mic_fifo: Path, speaker_fifo: Path, rate: int, *, fixed_rate: bool = False) -> str:
    """The device definitions: `plug` pins the file plugin's format to S16_LE mono at `rate`;
    ALSA's default device is the pair, so a program that picks no device uses them too.
    `fixed_rate` names a rate converter that does not exist, so the devices accept only `rate`
    (like hardware with one clock) and refuse every other rate."""
    converter = '\n    rate_converter "none_installed"' if fixed_rate else ""
    return f"""
pcm.{MIC} {{
    type plug
    slave {{
        pcm {{ type file; slave.pcm "null"; file "/dev/null"; infile "{mic_fifo}"; format "raw" }}
        format S16_LE
        rate {rate}
        channels 1
    }}{converter}
    hint {{ show on; description "voicerouter test microphone" }}
}}
pcm.{SPEAKER} {{
    type plug
    slave {{
        pcm {{ type file; slave.pcm "null"; file "{speaker_fifo}"; format "raw" }}
        format S16_LE
        rate {rate}
        channels 1
    }}{converter}
    hint {{ show on; description "voicerouter test speaker" }}
}}
pcm.!default {{ type asym; playback.pcm "{SPEAKER}"; capture.pcm "{MIC}" }}
"""


class VirtualAudio:
    """A paced virtual microphone (plays `mic_pcm`, then silence) and a recording virtual speaker.

    `mic_pcm` is mono int16 at `rate`. Use as a context manager around the subprocess run; after
    exit, `speaker_pcm` holds everything the speaker played (mono int16 at `rate`).
    `block_frames` must be the capture blocksize the program opens the microphone with.
    """

    def __init__(
        self, root: Path, mic_pcm: bytes, *, rate: int = 16000, block_frames: int = 480, fixed_rate: bool = False
    ) -> None:
        self.root = root
        self.rate = rate
        self.fixed_rate = fixed_rate
        self.block_bytes = block_frames * 2
        self.mic_pcm = mic_pcm
        self.home = root / "home"
        self.mic_fifo = root / "mic.fifo"
        self.speaker_fifo = root / "speaker.fifo"
        self.mic_bytes_sent = 0
        self._speaker = bytearray()
        self._stop = threading.Event()
        self._mic_unplugged = threading.Event()
        self._speaker_unplugged = threading.Event()
        self._threads: list[threading.Thread] = []
        self._fds: list[int] = []

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["HOME"] = str(self.home)
        env.pop("ALSA_CONFIG_PATH", None)
        return env

    @property
    def speaker_pcm(self) -> bytes:
        return bytes(self._speaker)

    def unplug_mic(self) -> None:
        """Stop feeding the microphone: its reads block, like a device that vanished mid-stream."""
        self._mic_unplugged.set()

    def unplug_speaker(self) -> None:
        """Stop taking audio from the speaker: its writes block, like a device that vanished."""
        self._speaker_unplugged.set()

    def __enter__(self) -> VirtualAudio:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / ".asoundrc").write_text(asoundrc(self.mic_fifo, self.speaker_fifo, self.rate, fixed_rate=self.fixed_rate))
        for fifo in (self.mic_fifo, self.speaker_fifo):
            if fifo.exists():
                fifo.unlink()
            os.mkfifo(fifo)
        # O_RDWR opens a FIFO without waiting for the other end, and keeps it open while ALSA
        # opens and closes the device (PortAudio probes every device when it initialises).
        mic_fd = os.open(self.mic_fifo, os.O_RDWR | os.O_NONBLOCK)
        spk_fd = os.open(self.speaker_fifo, os.O_RDWR | os.O_NONBLOCK)
        self._fds = [mic_fd, spk_fd]
        for fd in self._fds:
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        self._threads = [
            threading.Thread(target=self._feed_mic, args=(mic_fd,), daemon=True),
            threading.Thread(target=self._drain_speaker, args=(spk_fd,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def _feed_mic(self, fd: int) -> None:
        period = self.block_bytes / 2 / self.rate
        silence = bytes(self.block_bytes)
        pos = 0
        due: float | None = None
        while not self._stop.is_set():
            if self._mic_unplugged.is_set():
                time.sleep(0.05)
                continue
            if pos < len(self.mic_pcm):
                block = self.mic_pcm[pos : pos + self.block_bytes]
                block += bytes(self.block_bytes - len(block))
            else:
                block = silence
            # Wait until the pipe has room for the whole block (the reader is the sound card clock).
            _, writable, _ = select.select([], [fd], [], 0.05)
            if not writable:
                continue
            try:
                os.write(fd, block)
            except BlockingIOError:
                continue
            pos += self.block_bytes
            self.mic_bytes_sent = pos
            # Pace at the stream rate; after a stall (no reader yet) restart the schedule, no burst.
            now = time.monotonic()
            due = now + period if due is None or due + period < now else due + period
            time.sleep(max(0.0, due - time.monotonic()))

    def _drain_speaker(self, fd: int) -> None:
        t0: float | None = None
        taken = 0
        while True:
            if self._speaker_unplugged.is_set():
                if self._stop.is_set():
                    return
                time.sleep(0.05)
                continue
            readable, _, _ = select.select([fd], [], [], 0.05)
            if not readable:
                if self._stop.is_set():
                    return
                continue
            try:
                data = os.read(fd, PIPE_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:  # pragma: no cover - closed under us
                if exc.errno == errno.EBADF:
                    return
                raise
            if not data:
                continue
            if t0 is None:
                t0 = time.monotonic()
            self._speaker += data
            taken += len(data)
            # Consume no faster than a sound card would play.
            ahead = t0 + taken / 2 / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


def loud_segments(pcm: bytes, rate: int, *, threshold: int = 500, gap_s: float = 0.3) -> list[tuple[float, float]]:
    """(start_s, end_s) of the stretches where |sample| exceeds `threshold`, joining gaps < `gap_s`."""
    import numpy as np

    x = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32)) > threshold
    if not x.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], x.astype(np.int8), [0]])))
    segments: list[tuple[float, float]] = []
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        s, e = start / rate, end / rate
        if segments and s - segments[-1][1] < gap_s:
            segments[-1] = (segments[-1][0], e)
        else:
            segments.append((s, e))
    return segments


def sounding_s(pcm: bytes, rate: int, start_s: float, end_s: float, *, threshold: int = 500) -> float:
    """Seconds of sound between `start_s` and `end_s`, not counting gaps (a late chunk leaves one)."""
    return sum(
        min(e, end_s) - max(s, start_s)
        for s, e in loud_segments(pcm, rate, threshold=threshold, gap_s=0.01)
        if e > start_s and s < end_s
    )
