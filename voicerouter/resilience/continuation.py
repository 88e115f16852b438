"""What a replacement agent reply adds to the part of a cut reply the caller has already heard.

When an agent's reply breaks mid-stream, the sentences already spoken stay spoken; the next agent
(or the same one, on a retry) is asked to continue after them (`said`). A replacement may still
start over, or restate the last sentence it was shown: `Continuation` drops such a repeated
beginning at a word boundary (words compared without case or punctuation), so nothing is heard
twice, and joins what is left to the heard text with a space.

A repeat is recognised only in whole heard sentences: the replacement's first words must equal the
heard text from one of its sentence starts to one of its sentence ends (the whole reply said again,
its last sentence, or its first sentences before the replacement goes its own way). A continuation
that merely begins with the same word as the heard text ended with is not cut.
"""

from __future__ import annotations

import re

from voicerouter.session.sentences import split_sentences

_PUNCTUATION = re.compile(r"[^\w']+")
_WORD = re.compile(r"\S+")


def _norm(word: str) -> str:
    return _PUNCTUATION.sub("", word.lower())


def _words(text: str) -> list[str]:
    return [w for w in (_norm(m.group(0)) for m in _WORD.finditer(text)) if w]


class Continuation:
    """Filters one replacement reply's text, streamed in pieces, against the heard text `said`."""

    def __init__(self, said: str) -> None:
        self.said = said.strip()
        heard = _words(self.said)
        ends, count = [], 0  # word counts at the heard text's sentence ends
        for sentence in split_sentences(self.said):
            count += len(_words(sentence))
            ends.append(count)
        starts = [0] + ends[:-1]
        # candidate repeats: the heard words from a sentence start on, each with the places (word
        # counts) where a repeat of it may end: its sentence ends
        self._candidates = [(tuple(heard[s:]), [e - s for e in ends if e > s]) for s in starts if heard[s:]]
        self._text = ""  # the replacement's text not passed on yet
        self._decided = not self._candidates
        self._joined = not self.said
        self.dropped_words = 0  # words of the replacement dropped as a repeat

    def feed(self, piece: str) -> str:
        """Take a piece of the replacement; return the text that can be passed on now."""
        self._text += piece
        if not self._decided:
            self._decide(final=False)
            if not self._decided:
                return ""
        return self._release()

    def finish(self) -> str:
        """The replacement is complete: whatever is left (minus a repeat) is passed on."""
        if not self._decided:
            self._decide(final=True)
        return self._release()

    def _decide(self, *, final: bool) -> None:
        spans = list(_WORD.finditer(self._text))
        complete = spans if final or (spans and spans[-1].end() < len(self._text)) else spans[:-1]
        words = [_norm(m.group(0)) for m in complete]
        drop = 0
        for candidate, cuts in self._candidates:
            agree = 0  # leading words the replacement has in common with this candidate
            while agree < min(len(candidate), len(words)) and candidate[agree] == words[agree]:
                agree += 1
            if agree == len(words) < len(candidate) and not final:
                return  # it may still be repeating this one: wait for more words
            if agree == len(words) and final:
                drop = max(drop, agree)  # all it said was heard already
            drop = max([drop] + [cut for cut in cuts if cut <= agree])
        if drop:
            self._text = self._text[complete[drop - 1].end():]
            self.dropped_words = drop
        self._decided = True

    def _release(self) -> str:
        text, self._text = self._text, ""
        if not self._joined:
            if not text.strip():
                return ""  # the space that joins it to the heard text comes with its first word
            self._joined = True
            if not text[0].isspace():
                text = " " + text
        return text


def continue_after(said: str, reply: str) -> str:
    """The part of a whole `reply` that is not a repeat of `said`, joined to it with a space."""
    continuation = Continuation(said)
    return continuation.feed(reply) + continuation.finish()
