"""Split a reply into sentences so TTS can start speaking the first one while the rest waits.

A sentence is what a listener hears as one unit; the split must not break "Dr. Smith", "3.5"
or "e.g." apart, and very long run-ons are cut at a comma so the first audio comes early.
"""

from __future__ import annotations

import re

# Words that end with a period without ending the sentence.
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "approx", "inc", "ltd"}
)
_BOUNDARY = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n+")
MAX_SENTENCE_CHARS = 220


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Sentences of `text`, trimmed, without empty pieces; long ones split at a comma or space."""
    pieces: list[str] = []
    current = ""
    pos = 0
    for match in _BOUNDARY.finditer(text):
        chunk = text[pos : match.end()]
        pos = match.end()
        current += chunk
        if match.group(0).startswith("\n") or not _ends_with_abbreviation(current):
            pieces.append(current)
            current = ""
    current += text[pos:]
    if current:
        pieces.append(current)
    out: list[str] = []
    for piece in pieces:
        piece = " ".join(piece.split())
        if piece:
            out.extend(_cut_long(piece, max_chars))
    return out


def _ends_with_abbreviation(text: str) -> bool:
    stripped = text.rstrip().rstrip("\"')]")
    if not stripped.endswith("."):
        return False
    word = stripped[:-1].rsplit(None, 1)[-1].lower() if stripped[:-1].split() else ""
    # Single letters ("J. Smith") and known abbreviations do not end a sentence.
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    out: list[str] = []
    while len(sentence) > max_chars:
        cut = sentence.rfind(", ", 0, max_chars)
        cut = cut + 1 if cut > max_chars // 3 else sentence.rfind(" ", 0, max_chars)
        if cut <= 0:
            cut = max_chars
        out.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    if sentence:
        out.append(sentence)
    return out
