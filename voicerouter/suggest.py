""""Did you mean ...?" for names people type: provider types and names, keys, rules, flags."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest to `word` (ignoring case), if any is near enough to be a typo."""
    pool = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(word.lower(), list(pool), n=1, cutoff=0.6)
    if not found:  # `dgg` for `dg`, `turn.silence` for `silence_ms`: a prefix of one, or one of the other
        prefixed = [c for low, c in pool.items() if len(word) >= 2 and (low.startswith(word.lower()) or word.lower().startswith(low))]
        return prefixed[0] if len(prefixed) == 1 else None
    return pool[found[0]]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` or ""."""
    match = closest(word, candidates)
    return f" (did you mean {match!r}?)" if match else ""
