"""Voice activity detection: a per-frame verdict (WebRTC VAD, or Silero VAD with `engine: silero`)
smoothed into speech regions with start/stop hysteresis, timestamps and pre-roll, so the turn
detector and STT get clean regions.

Rules (all durations from `VadConfig`):
- A frame is voiced when the engine says so (webrtc at `aggressiveness`; silero when its speech
  probability reaches `threshold`) and its level is at least `min_dbfs` (-50 dBFS by default):
  webrtcvad flags the onset of even very faint noise as speech.
- Speech starts when the last `ceil(start_ms / frame_ms)` + slack frames hold at least
  `ceil(start_ms / frame_ms)` voiced ones (a quarter of the window may be unvoiced, at least one
  frame), ending on a voiced frame. `speech_start_s` is the start of the first voiced frame of
  that window.
- Speech ends after `ceil(stop_ms / frame_ms)` consecutive unvoiced frames; `speech_end_s` is the
  end of the last voiced frame, i.e. `stop_ms` before the frame that ended it.
- On start, `preroll` holds the audio from `preroll_ms` before the first voiced frame up to and
  including the current frame; `preroll` followed by every later frame is the contiguous audio
  of the region, so the first syllable is never clipped. After a short pause the pre-roll of
  the next region overlaps audio already seen: a caller that keeps every frame of an open turn
  should use the pre-roll only when a new turn starts.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import webrtcvad

from voicerouter.audio.convert import frame_bytes, rms_dbfs
from voicerouter.config.schema import VadConfig
from voicerouter.detect.silero import DEFAULT_THRESHOLD, SileroClassifier

SUPPORTED_RATES = (8000, 16000, 32000, 48000)
DEFAULT_MIN_DBFS = -50.0


@dataclass(frozen=True)
class VadUpdate:
    """The detector's view after one frame. Times are seconds of audio processed (frame ends)."""

    t: float  # audio processed so far, including this frame
    is_speech_frame: bool  # this frame's own verdict
    speaking: bool  # the smoothed state after this frame
    started: bool  # speech started with this frame
    ended: bool  # speech ended with this frame
    speech_start_s: float | None  # start of the current (or last) speech region
    speech_end_s: float | None  # end of the last finished speech region
    level_dbfs: float
    preroll: bytes = b""  # only on `started`


class VoiceActivityDetector:
    """Feed it exact frames of mono int16 PCM (`frame_ms` from the config) one by one."""

    def __init__(
        self, config: VadConfig | None = None, sample_rate: int = 16000, *, min_dbfs: float = DEFAULT_MIN_DBFS
    ):
        self.config = config or VadConfig()
        if self.config.engine == "silero":
            self._silero: SileroClassifier | None = SileroClassifier(
                sample_rate, DEFAULT_THRESHOLD if self.config.threshold is None else self.config.threshold
            )
        else:
            self._silero = None
        if sample_rate not in SUPPORTED_RATES:
            raise ValueError(
                f"webrtc VAD needs a sample rate of {', '.join(map(str, SUPPORTED_RATES))} Hz, got {sample_rate}"
            )
        self.sample_rate = sample_rate
        self.frame_ms = self.config.frame_ms
        self.frame_bytes = frame_bytes(self.frame_ms, sample_rate)
        self.min_dbfs = min_dbfs
        self._frame_s = self.frame_ms / 1000
        self._start_frames = max(1, math.ceil(self.config.start_ms / self.frame_ms))
        self._window = self._start_frames + (max(1, self._start_frames // 4) if self._start_frames > 1 else 0)
        self._stop_frames = max(1, math.ceil(self.config.stop_ms / self.frame_ms))
        self._preroll_frames = math.ceil(self.config.preroll_ms / self.frame_ms)
        self._vad = webrtcvad.Vad(self.config.aggressiveness)
        self.reset()

    def reset(self) -> None:
        """Forget all state and restart the clock at 0 (e.g. for a new input)."""
        self._vad = webrtcvad.Vad(self.config.aggressiveness)
        if self._silero is not None:
            self._silero.reset()
        self._index = 0  # frames processed
        self._recent: deque[tuple[int, bool, bytes]] = deque(maxlen=self._window + self._preroll_frames)
        self._speaking = False
        self._unvoiced_run = 0
        self._speech_start_s: float | None = None
        self._speech_end_s: float | None = None

    @property
    def t(self) -> float:
        return self._index * self._frame_s

    @property
    def speaking(self) -> bool:
        return self._speaking

    def process(self, frame: bytes) -> VadUpdate:
        if len(frame) != self.frame_bytes:
            raise ValueError(
                f"VAD frame must be {self.frame_bytes} bytes ({self.frame_ms} ms of mono int16 at "
                f"{self.sample_rate} Hz), got {len(frame)}; split audio with voicerouter.audio.convert.frames"
            )
        level = rms_dbfs(frame)
        if self._silero is not None:
            # Silero keeps state across windows: every frame goes through it, quiet ones too.
            voiced = self._silero.is_speech(frame) and level >= self.min_dbfs
        else:
            voiced = level >= self.min_dbfs and self._vad.is_speech(frame, self.sample_rate)
        index = self._index
        self._index += 1
        self._recent.append((index, voiced, frame))
        started = ended = False
        preroll = b""

        if not self._speaking:
            # Only a voiced frame can start speech: the window is looked at then, not on every frame.
            window = list(self._recent)[-self._window :] if voiced else ()
            if voiced and sum(v for _, v, _ in window) >= self._start_frames:
                first = next(i for i, v, _ in window if v)
                self._speaking = started = True
                self._unvoiced_run = 0
                self._speech_start_s = first * self._frame_s
                self._speech_end_s = None
                preroll = b"".join(f for i, _, f in self._recent if i >= first - self._preroll_frames)
        elif voiced:
            self._unvoiced_run = 0
        else:
            self._unvoiced_run += 1
            if self._unvoiced_run >= self._stop_frames:
                self._speaking = False
                ended = True
                self._speech_end_s = (index + 1 - self._unvoiced_run) * self._frame_s

        return VadUpdate(
            t=self._index * self._frame_s,
            is_speech_frame=voiced,
            speaking=self._speaking,
            started=started,
            ended=ended,
            speech_start_s=self._speech_start_s,
            speech_end_s=self._speech_end_s,
            level_dbfs=level,
            preroll=preroll,
        )
