"""Keypad digits (DTMF) gathered into entries, the keypad's equivalent of a spoken turn.

An entry ends at the route's terminator key (`#`, not part of the entry), once it holds
`max_digits` keys, or after a pause of `inter_digit_timeout_ms` since the last key. Time is the
session's audio clock (seconds of the caller's audio), so an entry ends at the same point of a
call however busy the server is.
"""

from __future__ import annotations

from dataclasses import dataclass

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
