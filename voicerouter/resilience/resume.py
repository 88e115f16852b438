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

from voicerouter.providers.base import PIPELINE_RATE, AudioChunk

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

    def knows(self, provider: str) -> bool:
        """Whether `provider`'s own rate was learned (else `get` is a default or other voices' rate)."""
        return provider in self.by_provider

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
        return self._quietest(estimate)[0]

    def _quietest(self, estimate: float) -> tuple[float, float]:
        """The quietest 10 ms within `SNAP_S` of `estimate`: its middle in seconds and its energy (the
        sum of absolute samples; `inf` when there is no room to look)."""
        assert self.rate is not None
        window = max(1, self.rate // 100)
        lo = max(self.passed_s, estimate - SNAP_S)
        hi = min(self.received_s, estimate + SNAP_S)
        first = int((lo - self.passed_s) * self.rate)
        last = int((hi - self.passed_s) * self.rate) - window
        if last <= first:
            return estimate, float("inf")
        # Energy of every candidate window from one cumulative sum (numpy), not a Python loop per sample:
        # this runs for each word end of every reply.
        samples = np.abs(np.frombuffer(bytes(self.held[first * 2 : (last + window) * 2]), dtype="<i2").astype(np.int64))
        cumulative = np.concatenate(([0], np.cumsum(samples)))
        starts = np.arange(first, last + 1, window // 2 or 1)
        energy = cumulative[starts - first + window] - cumulative[starts - first]
        target = int((estimate - self.passed_s) * self.rate) - window // 2
        pick = int(np.lexsort((np.abs(starts - target), energy))[0])  # quietest; on a tie, nearest
        return self.passed_s + (int(starts[pick]) + window // 2) / self.rate, float(energy[pick])

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


# ---- speech-to-speech replies ------------------------------------------------------------------
#
# An S2S reply's text is not known in advance: it arrives as transcript deltas beside the audio.
# The same hold-back applies to what is known so far: audio is passed on up to the end of the last
# word whose text is complete (followed by a space) and whose audio has arrived, and the reply's
# text is passed on with it, so the text a session records is what the caller heard. When a reply
# breaks, the next attempt (a new connection to the same provider, or another vendor) is told the
# words heard so far and asked to continue; if it starts over instead, the words it repeats are
# recognised against the heard ones and their audio is skipped, up to the matching word boundary.

_PUNCTUATION = re.compile(r"[^\w']+")
# Audio held back while no transcript covers it is passed on after this much (at a quiet point): a
# provider whose transcript lags its audio, or never comes, must not delay the reply. A break in
# that window can repeat the few words nobody had the text of.
MAX_HOLD_S = 0.6
# A word end nothing confirms is passed on only when this much audio waits behind the last confirmed
# one. Confirmed: a vendor word mark, the provider's learned speaking rate, or a pause (a 10 ms window
# far quieter than the audio held) at the estimate. Until one completed reply has taught a voice's
# rate, an estimate at the default rate can be a few characters off; a break would then repeat (or
# lose) the piece of a word between the estimate and the real word end, so the audio waits instead.
UNSURE_HOLD_S = 2 * MAX_HOLD_S
PAUSE_ENERGY = 0.1  # a pause: 10 ms at most this fraction of the held audio's mean energy


def _norm(word: str) -> str:
    """A word as two attempts of one reply are compared: lower case, without punctuation."""
    return _PUNCTUATION.sub("", word.lower())


class ReplyProgress:
    """One S2S reply across attempts: the words the caller has heard, in order."""

    def __init__(self) -> None:
        self.heard = ""  # the reply's text up to the last word heard
        self.words_heard = 0
        self.heard_s = 0.0  # audio passed on, over all attempts
        self.breaks = 0
        self.attempt: ReplyAttempt | None = None

    def begin(self, provider: str, seconds_per_char: float, *, rate_known: bool = True) -> ReplyAttempt:
        """A new attempt; `rate_known`: `seconds_per_char` was learned from this voice's completed
        replies (False: a default or another voice's rate, so only pauses confirm word ends).

        Unconfirmed word ends wait (`UNSURE_HOLD_S`) in a reply's first attempt only: after a break
        the caller is already waiting, so a later attempt passes words on at their estimates (a
        second break in one reply could repeat a piece of a word); the end of the words a
        replacement repeats always waits to be sure.
        """
        self.attempt = ReplyAttempt(provider, self.heard, seconds_per_char, self.heard_s, rate_known=rate_known,
                                    wait_for_sure=not rate_known and self.breaks == 0)
        return self.attempt

    def broke(self) -> int:
        """The attempt failed: the words whose audio it passed on are heard; returns how many."""
        attempt, self.attempt = self.attempt, None
        if attempt is None:
            return 0
        self.breaks += 1
        said = attempt.said
        self.heard += said
        words = len(word_spans(said))
        self.words_heard += words
        self.heard_s += attempt.passed_out_s
        return words


class ReplyAttempt(Attempt):
    """One provider's attempt at (the rest of) a reply: its text grows with transcript deltas.

    `heard` is the reply's text the caller heard from earlier attempts. Until this attempt's
    first words show whether it continues after them or starts over, nothing is passed on; then
    the repeated words (if any) are skipped, text and audio alike.
    """

    def __init__(self, provider: str, heard: str, seconds_per_char: float, heard_s: float = 0.0, *,
                 rate_known: bool = True, wait_for_sure: bool | None = None) -> None:
        super().__init__(provider, "", [], seconds_per_char)
        self.rate_known = rate_known
        # unconfirmed ends of words to pass on wait (those of repeated words to drop always do)
        self.wait_for_sure = not rate_known if wait_for_sure is None else wait_for_sure
        # the last word end a pause confirmed (seconds into this attempt's audio, characters into its
        # text): later estimates count from there, so an unlearned rate's error does not add up
        self.anchor = (0.0, 0)
        # how long to wait for the text that tells a continuation from a repeat (about the time
        # the heard words take to say again)
        self.decide_within_s = MAX_HOLD_S + 1.5 * heard_s
        self.before = heard
        self.said = ""  # what this attempt added to the reply the caller heard
        self.heard_words = [_norm(text[a:b]) for text in (heard,) for a, b in word_spans(text)]
        self.joins = bool(heard)  # its first words follow heard ones: they need a space before them
        self.skip: int | None = None if self.heard_words else 0  # leading words that repeat heard ones
        self.done = False
        self.text_out = 0  # characters of the text passed on (or skipped)
        self.passed_out_s = 0.0  # audio passed on (passed_s also counts skipped audio)

    def add_text(self, delta: str) -> None:
        self.part += delta
        self.spans = word_spans(self.part)
        self._decide()

    def _complete(self) -> int:
        """How many words of the text so far are complete (the last one may still go on)."""
        n = len(self.spans)
        if n and not self.done and self.spans[-1][1] == len(self.part):
            n -= 1
        return n

    def _decide(self) -> None:
        if self.skip is not None:
            return
        complete = self._complete()
        for index in range(min(complete, len(self.heard_words))):
            a, b = self.spans[index]
            if _norm(self.part[a:b]) != self.heard_words[index]:
                self.skip = 0  # it goes on from where the caller stopped hearing
                return
        if complete >= len(self.heard_words):
            self.skip = len(self.heard_words)  # it started over: its first words were heard already
        elif self.done:
            self.skip = 0

    def feed_text(self, delta: str) -> tuple[str, list[AudioChunk]]:
        """Take a transcript delta; return the text and audio that can be passed on now."""
        self.add_text(delta)
        audio = self._release()
        return self._text(), audio

    def feed_audio(self, chunk: AudioChunk) -> tuple[str, list[AudioChunk]]:
        """Take a chunk of the reply's audio; return the text and audio that can be passed on now."""
        audio = self.feed(chunk)
        return self._text(), audio

    def feed(self, chunk: AudioChunk) -> list[AudioChunk]:
        if self.rate is None:
            self.rate = chunk.sample_rate
        elif chunk.sample_rate != self.rate:  # a provider switching rates mid-stream: pass it on as is
            out = self.flush() + [chunk]
            self.passed_out_s += sum(c.duration_s for c in out)
            return out
        self.marks.extend(end for _, _, end in chunk.words)
        self.held += chunk.pcm
        self.received_s += chunk.duration_s
        return self._release()

    def _estimated_end(self, index: int) -> float:
        if index < len(self.marks):
            return self.marks[index]
        anchor_s, anchor_chars = self.anchor
        chars = self.spans[index][1]
        if chars < anchor_chars:
            return chars * self.seconds_per_char
        return anchor_s + (chars - anchor_chars) * self.seconds_per_char

    def _boundary(self, index: int, end: float) -> tuple[float, bool]:
        """Where word `index` ends in the audio (its estimate `end` placed) and whether that is sure."""
        if index < len(self.marks):
            return end, True
        if end <= self.passed_s:
            return end, True  # its audio went on already (passed without text)
        cut_s, energy = self._quietest(end)
        window = max(1, (self.rate or PIPELINE_RATE) // 100)
        mean = float(np.abs(np.frombuffer(bytes(self.held), dtype="<i2").astype(np.int64)).mean()) * window
        if energy <= PAUSE_ENERGY * mean:  # a pause: the word gap, so later estimates count from here
            chars = self.spans[index][1]
            self.anchor = (cut_s, chars)
            if not self.rate_known and chars >= 8:
                self.seconds_per_char = cut_s / chars  # this reply's own rate so far
            return cut_s, True
        return end, self.rate_known  # no gap there: the quietest point of a sound says nothing

    def _release(self) -> list[AudioChunk]:
        """Audio up to the last complete word whose audio has arrived and whose end is sure (see
        `UNSURE_HOLD_S`); repeated words are dropped."""
        if self.rate is None:
            return []
        if self.skip is None:
            if self.received_s <= self.decide_within_s:
                return []
            self.skip = 0  # no text to tell: take it for a continuation rather than keep the caller waiting
        complete = self._complete()
        ends: list[tuple[int, float, bool]] = []  # (words up to here, where the last one ends, may go)
        words = self.words_passed
        repeats_end_sure = self.words_passed >= self.skip  # where the repeated words end (if any)
        while words < complete:
            end = self._estimated_end(words)
            vendor = words < len(self.marks)
            if end + (0 if vendor else SNAP_S) > self.received_s:
                break
            cut_s, sure = self._boundary(words, end)
            words += 1
            if words == self.skip:
                repeats_end_sure = sure
            may_go = sure if words <= self.skip else repeats_end_sure and (sure or not self.wait_for_sure)
            ends.append((words, cut_s, may_go))
        sure_ends = [e for e in ends if e[2]]
        target = sure_ends[-1] if sure_ends else None
        # Held long enough: the best estimate goes. While repeated words are still to be dropped, the
        # time to say them again is added (a cut there at a wrong estimate would be heard too).
        limit = UNSURE_HOLD_S + (self.decide_within_s - MAX_HOLD_S if self.words_passed < self.skip else 0.0)
        if ends and self.received_s - self.passed_s > limit:
            target = ends[-1]
        out: list[AudioChunk] = []
        if target is not None:
            words, cut_s, _ = target
            if self.words_passed < self.skip:  # the repeated words: dropped, never passed on
                repeated = min(words, self.skip)
                drop_s = next(e[1] for e in ends if e[0] == repeated)
                if drop_s > self.passed_s:
                    self._pass(drop_s, repeated)
                self.text_out = max(self.text_out, self.spans[repeated - 1][1])
            if words > self.skip and cut_s > self.passed_s:
                out = self._pass(cut_s, words)
            self.words_passed = max(self.words_passed, words)
        if self.words_passed >= max(self.skip, complete) and self.received_s - self.passed_s > MAX_HOLD_S:
            # no transcript covers the audio held (it lags, or never comes): pass the audio on at a
            # pause anyway (and, after twice as long, at the quietest point there is)
            pause = self._pause(self.received_s - MAX_HOLD_S / 2, self.received_s - 0.01,
                                force=self.received_s - self.passed_s > 2 * MAX_HOLD_S)
            if pause is not None and pause > self.passed_s:
                out += self._pass(pause, self.words_passed)
        self.passed_out_s += sum(c.duration_s for c in out)
        return out

    def _pause(self, lo: float, hi: float, *, force: bool) -> float | None:
        """The quietest 10 ms between `lo` and `hi` seconds if it is a pause (far quieter than the
        audio held back), or whatever it is when `force`d; None otherwise."""
        assert self.rate is not None
        window = max(1, self.rate // 100)
        first = max(0, int((lo - self.passed_s) * self.rate))
        last = min(len(self.held) // 2, int((hi - self.passed_s) * self.rate)) - window
        if last <= first:
            return None
        samples = np.abs(np.frombuffer(bytes(self.held), dtype="<i2").astype(np.int64))
        cumulative = np.concatenate(([0], np.cumsum(samples[first : last + window])))
        energy = cumulative[window:] - cumulative[:-window]
        best = int(np.argmin(energy))
        mean = samples.mean() * window if len(samples) else 0.0
        if not force and energy[best] > 0.1 * mean:
            return None
        return self.passed_s + (first + best + window // 2) / self.rate

    def finish(self) -> tuple[str, list[AudioChunk]]:
        """The reply is complete: everything not repeated is passed on (text and audio)."""
        self.done = True
        self._decide()
        anchor_s, anchor_chars = self.anchor
        chars = len(self.part.rstrip()) - anchor_chars
        if not self.rate_known and chars >= 8 and self.received_s > anchor_s:
            # all of it is here: its own rate places the end of the repeated words
            self.seconds_per_char = (self.received_s - anchor_s) / chars
        if self.skip and self.words_passed < self.skip and self.rate is not None:
            cut_s = min(self.received_s, self._boundary(self.skip - 1, self._estimated_end(self.skip - 1))[0])
            if cut_s > self.passed_s:
                self._pass(cut_s, self.skip)
            self.words_passed = self.skip
        if self.skip:
            self.text_out = max(self.text_out, self.spans[self.skip - 1][1])
        out = self.flush()
        self.passed_out_s += sum(c.duration_s for c in out)
        return self._text(), out

    def _text(self) -> str:
        """The text of the words passed on since the last call (all of it once finished)."""
        if self.done:
            end = len(self.part)
        elif self.words_passed > (self.skip or 0):
            end = self.spans[self.words_passed - 1][1]
        else:
            return ""
        text, self.text_out = self.part[self.text_out:end], max(self.text_out, end)
        if text and self.joins:
            self.joins = False
            if not text[0].isspace():
                text = " " + text
        self.said += text
        return text
