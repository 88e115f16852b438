"""Where a sentence broken mid-way resumes: at the first word the listener has not heard, never mid-word.

The TTS chain passes a sentence's audio on only up to the end of the last word known to be
complete, holding back the tail of the word still arriving. If the provider breaks, the held-back
partial word is dropped (nobody heard it) and the next provider speaks the rest of the sentence from
that word on: nothing is heard twice, no word is cut or lost. When the stream completes, everything
held back is passed on.

Word ends come from the vendor's alignment when its chunks carry `AudioChunk.words`; otherwise
they are estimated from the audio received against the sentence's characters, at the provider's
own speaking rate (learned from its completed sentences; `DEFAULT_SECONDS_PER_CHAR` until then),
and moved to the quietest 10 ms within `SNAP_S` of the estimate, where a word gap most likely is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from voicerouter.providers.base import AudioChunk

# ~14 characters per second (spaces and punctuation included): 150-170 words per minute of English.
DEFAULT_SECONDS_PER_CHAR = 0.07
SNAP_S = 0.06  # how far an estimated word end may move to a quieter point
RATE_ALPHA = 0.5  # weight of the newest sentence in the learned speaking rate
_WORD = re.compile(r"\S+")


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of each whitespace-separated word."""
    return [(m.start(), m.end()) for m in _WORD.finditer(text)]


@dataclass
class SpeakingRate:
    """Seconds of audio per character of text, per provider, learned from completed sentences."""

    by_provider: dict[str, float] = field(default_factory=dict)

    def get(self, provider: str) -> float:
        if provider in self.by_provider:
            return self.by_provider[provider]
        known = list(self.by_provider.values())
        return sum(known) / len(known) if known else DEFAULT_SECONDS_PER_CHAR

    def observe(self, provider: str, text: str, audio_s: float) -> None:
        chars = len(text.strip())
        if chars < 8 or audio_s <= 0:
            return  # too short to say anything about a rate
        rate = audio_s / chars
        old = self.by_provider.get(provider)
        self.by_provider[provider] = rate if old is None else RATE_ALPHA * rate + (1 - RATE_ALPHA) * old


class SentenceProgress:
    """One sentence across attempts: which words were heard, and what is left to speak."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.spans = word_spans(text)
        self.first_unheard = 0  # index into spans
        self.heard_s = 0.0  # audio passed on, over all attempts
        self.attempt: Attempt | None = None

    def remaining(self) -> str:
        if self.first_unheard >= len(self.spans):
            return ""
        return self.text[self.spans[self.first_unheard][0]:]

    def begin(self, provider: str, seconds_per_char: float) -> Attempt:
        start = self.spans[self.first_unheard][0] if self.first_unheard < len(self.spans) else len(self.text)
        part = self.text[start:]
        self.attempt = Attempt(provider, part, [(a - start, b - start) for a, b in self.spans[self.first_unheard:]],
                               seconds_per_char)
        return self.attempt

    def broke(self) -> int:
        """The attempt failed: the words it passed on are heard; returns how many (the rest is re-spoken)."""
        attempt, self.attempt = self.attempt, None
        if attempt is None:
            return 0
        self.first_unheard += attempt.words_passed
        self.heard_s += attempt.passed_s
        return attempt.words_passed


class Attempt:
    """One provider's audio for the rest of a sentence, passed on up to word boundaries."""

    def __init__(self, provider: str, part: str, spans: list[tuple[int, int]], seconds_per_char: float) -> None:
        self.provider = provider
        self.part = part
        self.spans = spans
        self.seconds_per_char = seconds_per_char
        self.rate: int | None = None
        self.held = bytearray()  # audio received, not passed on yet
        self.received_s = 0.0
        self.passed_s = 0.0
        self.words_passed = 0  # whole words whose audio was passed on
        self.marks: list[float] = []  # vendor word end times, in order

    def _estimated_end(self, index: int) -> float:
        if index < len(self.marks):
            return self.marks[index]
        return self.spans[index][1] * self.seconds_per_char

    def feed(self, chunk: AudioChunk) -> list[AudioChunk]:
        """Take a chunk of the provider's audio; return what can be passed on (up to a word end)."""
        if self.rate is None:
            self.rate = chunk.sample_rate
        elif chunk.sample_rate != self.rate:  # a provider switching rates mid-stream: pass it on as is
            return self.flush() + [chunk]
        self.marks.extend(end for _, _, end in chunk.words)
        self.held += chunk.pcm
        self.received_s += chunk.duration_s
        # the last word whose end (plus room to find the gap after it) has arrived
        words = self.words_passed
        cut_s: float | None = None
        while words < len(self.spans) - 1:
            end = self._estimated_end(words)
            vendor = words < len(self.marks)
            if end + (0 if vendor else SNAP_S) > self.received_s:
                break
            cut_s = end if vendor else self._snap(end)
            words += 1
        if cut_s is None or cut_s <= self.passed_s:
            return []
        return self._pass(cut_s, words)

    def _snap(self, estimate: float) -> float:
        """The quietest 10 ms around an estimated word end (a gap between words), as seconds."""
        assert self.rate is not None
        window = max(1, self.rate // 100)
        lo = max(self.passed_s, estimate - SNAP_S)
        hi = min(self.received_s, estimate + SNAP_S)
        first = int((lo - self.passed_s) * self.rate)
        last = int((hi - self.passed_s) * self.rate) - window
        if last <= first:
            return estimate
        # Energy of every candidate window from one cumulative sum (numpy), not a Python loop per sample:
        # this runs for each word end of every reply.
        samples = np.abs(np.frombuffer(bytes(self.held[first * 2 : (last + window) * 2]), dtype="<i2").astype(np.int64))
        cumulative = np.concatenate(([0], np.cumsum(samples)))
        starts = np.arange(first, last + 1, window // 2 or 1)
        energy = cumulative[starts - first + window] - cumulative[starts - first]
        target = int((estimate - self.passed_s) * self.rate) - window // 2
        best = int(starts[np.lexsort((np.abs(starts - target), energy))[0]])  # quietest; on a tie, nearest
        return self.passed_s + (best + window // 2) / self.rate

    def _pass(self, cut_s: float, words: int) -> list[AudioChunk]:
        assert self.rate is not None
        n = int(round((cut_s - self.passed_s) * self.rate)) * 2
        n = max(0, min(n, len(self.held)))
        out, self.held = bytes(self.held[:n]), self.held[n:]
        self.passed_s += len(out) / 2 / self.rate
        self.words_passed = words
        return [AudioChunk(out, self.rate)] if out else []

    def flush(self) -> list[AudioChunk]:
        """The stream completed: everything held back is passed on."""
        if not self.held or self.rate is None:
            self.words_passed = len(self.spans)
            return []
        out, self.held = bytes(self.held), bytearray()
        self.passed_s += len(out) / 2 / self.rate
        self.words_passed = len(self.spans)
        return [AudioChunk(out, self.rate)]
