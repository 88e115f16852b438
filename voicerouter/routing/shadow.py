"""Shadowed routes (a route an earlier one always wins over), found in near-linear time.

Comparing every route with every earlier one is quadratic: 10,000 routes took minutes. Instead
each route is filed under keys that any route it covers must share: its flag set, and the values
of its first conditioned field (tenant, else region), literal or glob prefix. A later route then
looks only in the buckets its own flags and first tenant/region pattern could fall into, and
`covers` confirms each candidate.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import combinations

from voicerouter.config.schema import MatchSpec
from voicerouter.routing.match import as_list, covers

_GLOB = re.compile(r"[*?\[]")
MAX_FLAG_SUBSETS = 8  # a route with more flags than this looks in every known flag set instead

Key = tuple[str, str, str]  # (field, "lit" | "glob" | "any", literal or glob prefix)
Flags = frozenset[tuple[str, bool]]


def _keys(field: str, patterns: list[str]) -> Iterator[Key]:
    for pattern in patterns:
        glob = _GLOB.search(pattern)
        yield (field, "glob", pattern[: glob.start()]) if glob else (field, "lit", pattern)


class ShadowIndex:
    """Add routes in table order; `shadowed_by` says which earlier route covers the new one."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[Key, Flags], list[int]] = {}
        self._flag_sets: set[Flags] = set()
        self._keys: set[Key] = set()
        self._specs: list[MatchSpec] = []

    def shadowed_by(self, spec: MatchSpec) -> int | None:
        """The first earlier route that matches every session `spec` would, or None."""
        candidates: set[int] = set()
        for key in self._probe_keys(spec):
            for flags in self._probe_flags(spec):
                candidates.update(self._buckets.get((key, flags), ()))
        for index in sorted(candidates):
            if covers(self._specs[index], spec):
                return index
        return None

    def add(self, spec: MatchSpec) -> None:
        index = len(self._specs)
        self._specs.append(spec)
        flags: Flags = frozenset(spec.flags.items())
        self._flag_sets.add(flags)
        if spec.tenant is not None:
            keys = list(_keys("tenant", as_list(spec.tenant)))
        elif spec.region is not None:
            keys = list(_keys("region", as_list(spec.region)))
        else:
            keys = [("any", "any", "")]
        for key in dict.fromkeys(keys):
            self._keys.add(key)
            self._buckets.setdefault((key, flags), []).append(index)

    def _probe_keys(self, spec: MatchSpec) -> Iterator[Key]:
        """Keys an earlier covering route must be filed under."""
        yield ("any", "any", "")
        for field in ("tenant", "region"):
            patterns = as_list(getattr(spec, field))
            if not patterns:
                continue
            first = patterns[0]  # a covering route covers this one, so it is enough to look it up
            # An earlier literal covers it only by being the same text; an earlier glob only if
            # its literal prefix starts the text (the later pattern is read as text, wildcards too).
            probes = [(field, "lit", first)] + [(field, "glob", first[:n]) for n in range(len(first) + 1)]
            yield from (key for key in probes if key in self._keys)

    def _probe_flags(self, spec: MatchSpec) -> Iterator[Flags]:
        """Flag sets an earlier covering route may have: the subsets of this route's flags."""
        items = list(spec.flags.items())
        if len(items) > MAX_FLAG_SUBSETS:
            yield from (flags for flags in self._flag_sets if flags <= frozenset(items))
            return
        for size in range(len(items) + 1):
            for subset in combinations(items, size):
                flags = frozenset(subset)
                if flags in self._flag_sets:
                    yield flags
