"""Scoring what an STT heard: word error rate, and the telephone line audio goes through first.

`word_error_rate(reference, hypothesis)` is the standard measure (substitutions + deletions +
insertions over the reference's words) after a light normalisation both sides share: lower case,
no punctuation, hyphens split, and digit strings spelled digit by digit (Whisper writes "1 2 3 4"
where a person says "one two three four"). `phone_line(pcm, rate)` is what a call does to audio:
8 kHz, G.711 mu-law, back to PCM16. `moonshine_readings()` is real speech to score on, with what is said.
"""

from __future__ import annotations

import re
from pathlib import Path

from voicerouter.providers.local import resample_int16

PHONE_RATE = 8000
DIGITS = "zero one two three four five six seven eight nine".split()
_TOKEN = re.compile(r"[a-z0-9']+")
TWO_CITIES = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
    "it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had "
    "everything before us, we had nothing before us, we were all going direct to Heaven, we were all going "
    "direct the other way - in short, the period was so far like the present period, that some of its "
    "noisiest authorities insisted on its being received, for good or for evil, in the superlative degree "
    "of comparison only."
)


def normalize(text: str) -> list[str]:
    """The words of `text` as WER compares them."""
    words: list[str] = []
    for token in _TOKEN.findall(text.lower().replace("-", " ")):
        token = token.strip("'")
        if token.isdigit():
            words.extend(DIGITS[int(d)] for d in token)
        elif token:
            words.append(token)
    return words


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions, deletions, insertions all cost 1)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Errors per reference word (0.0 is perfect; can exceed 1.0 with many insertions)."""
    ref = normalize(reference)
    return edit_distance(ref, normalize(hypothesis)) / max(1, len(ref))


def corpus_word_error_rate(pairs: list[tuple[str, str]]) -> float:
    """WER over several (reference, hypothesis) pairs: all errors over all reference words."""
    errors = sum(edit_distance(normalize(ref), normalize(hyp)) for ref, hyp in pairs)
    return errors / max(1, sum(len(normalize(ref)) for ref, _ in pairs))


def moonshine_readings() -> list[tuple[str, Path, str]]:
    """(name, path, what is said) of the readings of Beckett and Dickens that ship with the moonshine-voice
    wheel (MIT): real speech to score engines on, read where pip put them, nothing downloaded."""
    from voicerouter.providers.local import moonshine

    assets = moonshine.default_model_path().parent
    return [
        ("beckett", assets / "beckett.wav", "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."),
        ("two_cities", assets / "two_cities.wav", TWO_CITIES),
    ]


def phone_line(pcm: bytes, sample_rate: int) -> bytes:
    """Mono PCM16 as a phone call carries it: resampled to 8 kHz, mu-law coded and decoded (8 kHz PCM16)."""
    from voicerouter.testing.codecs import AudioFormat, decode_raw, encode

    narrow = resample_int16(pcm, sample_rate, PHONE_RATE)
    return decode_raw(encode(narrow, AudioFormat("raw", PHONE_RATE, "pcm_mulaw")), "pcm_mulaw", PHONE_RATE)
