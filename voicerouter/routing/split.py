"""Sticky weighted splits: the same session id lands in the same bucket on every machine, every time."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def bucket_point(session_id: str, salt: str) -> float:
    """A stable point in [0, 1) for this session (sha256, not Python's per-process hash)."""
    digest = hashlib.sha256(f"{salt}\x00{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick(weights: Mapping[str, float], session_id: str, salt: str) -> str:
    """The bucket `session_id` falls in; buckets keep their declared order, so adding one moves few ids."""
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("split weights must add up to more than zero")
    point = bucket_point(session_id, salt) * total
    running = 0.0
    last = ""
    for name, weight in weights.items():
        running += weight
        last = name
        if point < running:
            return name
    return last
