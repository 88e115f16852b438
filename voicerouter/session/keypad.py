"""Keypad digits (DTMF) gathered into entries, the keypad's equivalent of a spoken turn; and keys
pressed at set points of a recording (`replay --dtmf`, `load --dtmf`).

An entry ends at the route's terminator key (`#`, not part of the entry), once it holds
`max_digits` keys, or after a pause of `inter_digit_timeout_ms` since the last key. Time is the
session's audio clock (seconds of the caller's audio), so an entry ends at the same point of a
call however busy the server is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from voicerouter.config.schema import DTMF_DIGITS, DtmfConfig


def normalize_digit(text: str) -> str | None:
    """One DTMF key (0-9, *, #, A-D) as an upper-case character, or None when it is not one."""
    key = text.strip().upper()
    return key if len(key) == 1 and key in DTMF_DIGITS else None


@dataclass(frozen=True)
class KeypadEntry:
    digits: str
    start_s: float  # audio position of the first key
    end_s: float  # audio position of the last key (the terminator, when there is one)
    ended_by: str  # terminator | max_digits | timeout | end_of_audio


class KeypadCollector:
    def __init__(self, config: DtmfConfig) -> None:
        self.config = config
        self._digits: list[str] = []
        self._start_s = 0.0
        self._last_s = 0.0

    @property
    def pending(self) -> str:
        return "".join(self._digits)

    def press(self, key: str, audio_s: float) -> KeypadEntry | None:
        """Add one key; returns the entry it completes, if any."""
        if key == self.config.terminator:
            return self._end(audio_s, "terminator")
        if not self._digits:
            self._start_s = audio_s
        self._digits.append(key)
        self._last_s = audio_s
        if self.config.max_digits is not None and len(self._digits) >= self.config.max_digits:
            return self._end(audio_s, "max_digits")
        return None

    def due(self, audio_s: float) -> KeypadEntry | None:
        """The entry that the inter-digit timeout ends by `audio_s`, if any."""
        if self._digits and (audio_s - self._last_s) * 1000 >= self.config.inter_digit_timeout_ms:
            return self._end(self._last_s, "timeout")
        return None

    def finish(self) -> KeypadEntry | None:
        """The input ended: what was typed so far is an entry."""
        return self._end(self._last_s, "end_of_audio")

    def _end(self, end_s: float, why: str) -> KeypadEntry | None:
        if not self._digits:
            return None  # a terminator alone enters nothing
        entry = KeypadEntry("".join(self._digits), self._start_s, end_s, why)
        self._digits.clear()
        return entry


KEY_GAP_S = 0.25  # between the keys of one --dtmf group, as a person types them
AFTER_AUDIO_S = 0.5  # a group without a time is typed this long after the audio


def parse_dtmf(spec: str) -> tuple[float | None, str]:
    """`KEYS[@SECONDS]` (e.g. `1#@2.5`): keys pressed from that point of the audio, else after it."""
    keys, at, seconds = spec.partition("@")
    if not keys or any(normalize_digit(k) is None for k in keys):
        raise ValueError(f"--dtmf takes keys of 0-9 * # A-D, optionally @SECONDS, got {spec!r}")
    if not at:
        return None, keys.upper()
    try:
        when = float(seconds)
    except ValueError:
        when = -1.0
    if not when >= 0 or when == float("inf"):
        raise ValueError(f"--dtmf {spec!r}: the time after @ must be seconds >= 0")
    return when, keys.upper()


def key_schedule(groups: list[tuple[float | None, str]], audio_s: float) -> list[tuple[float, str]]:
    """Each key of the groups and when (seconds into the audio) it is pressed, in order."""
    out: list[tuple[float, str]] = []
    for at, keys in groups:
        start = audio_s + AFTER_AUDIO_S if at is None else at
        out += [(start + i * KEY_GAP_S, key) for i, key in enumerate(keys)]
    return sorted(out, key=lambda item: item[0])


class KeyedSource:
    """An audio source that also presses keys at set points of its audio, for `replay --dtmf`.

    Keys are pressed (`press(key, audio_s)`, the session's) just before the frame they fall in is
    read, so a fast replay hears them at the same point of the audio on every run; keys set after
    the audio are pressed once it has all been read.
    """

    def __init__(self, inner: Any, keys: list[tuple[float, str]]) -> None:
        self.inner = inner
        self.keys = sorted(keys, key=lambda item: item[0])
        self.press: Callable[[str, float], None] | None = None

    def __getattr__(self, name: str) -> Any:  # sample_rate, realtime, name, pcm ... of the recording
        return getattr(self.inner, name)

    async def frames(self) -> AsyncIterator[bytes]:
        pending = list(self.keys)
        t = 0.0
        async for frame in self.inner.frames():
            t_end = t + len(frame) / 2 / self.inner.sample_rate
            while pending and pending[0][0] < t_end and self.press is not None:
                at, key = pending.pop(0)
                self.press(key, max(at, t))
            yield frame
            t = t_end
        for at, key in pending:
            if self.press is not None:
                self.press(key, max(at, t))
