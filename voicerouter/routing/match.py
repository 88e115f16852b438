"""Does a route's `match` accept a session, and why (the explanation `resolve` prints)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voicerouter.config.schema import MatchSpec, Patterns
    from voicerouter.routing.plan import RouteContext


def as_list(patterns: Patterns | None) -> list[str]:
    if patterns is None:
        return []
    return [patterns] if isinstance(patterns, str) else list(patterns)


_GLOB = re.compile(r"[*?\[]")


def pattern_hit(patterns: Patterns, value: str | None) -> bool:
    """Does `value` match one of the patterns? A glob is tried only when its literal prefix fits."""
    if value is None:
        return False
    for pattern in (patterns,) if isinstance(patterns, str) else patterns:
        if pattern == value:
            return True
        glob = _GLOB.search(pattern)
        if glob is not None and value.startswith(pattern[: glob.start()]) and fnmatchcase(value, pattern):
            return True
    return False


def accepts(tenant: Patterns | None, region: Patterns | None, flags: Mapping[str, bool], ctx: RouteContext) -> bool:
    """Does a match (its fields as written) accept the session? Missing fields accept anything."""
    if tenant is not None and not pattern_hit(tenant, ctx.tenant):
        return False
    if region is not None and not pattern_hit(region, ctx.region):
        return False
    return all(ctx.flags.get(name, False) == wanted for name, wanted in flags.items())


def _match_value(field: str, value: str | None, patterns: Patterns | None) -> tuple[bool, str | None]:
    if patterns is None:
        return True, None
    if value is None:
        return False, None
    for pattern in as_list(patterns):
        if fnmatchcase(value, pattern):
            why = f"{field}={value}" if pattern == value else f"{field}={value} matches {pattern!r}"
            return True, why
    return False, None


def explain_match(spec: MatchSpec, ctx: RouteContext) -> list[str] | None:
    """The reasons the route matches, or None when it does not. An empty spec matches everything."""
    reasons: list[str] = []
    for field, value, patterns in (("tenant", ctx.tenant, spec.tenant), ("region", ctx.region, spec.region)):
        ok, why = _match_value(field, value, patterns)
        if not ok:
            return None
        if why:
            reasons.append(why)
    for flag, wanted in spec.flags.items():
        if ctx.flag(flag) != wanted:
            return None
        reasons.append(f"flag {flag}={'true' if wanted else 'false'}")
    return reasons or ["no conditions: matches every session"]


def covers(earlier: MatchSpec, later: MatchSpec) -> bool:
    """True when every session `later` accepts is accepted by `earlier` (so `later` is unreachable)."""
    for field in ("tenant", "region"):
        outer, inner = getattr(earlier, field), getattr(later, field)
        if outer is None:
            continue
        if inner is None:
            return False
        outer_list = as_list(outer)
        # A later pattern is covered when an earlier glob matches its text (eu-west-* under eu-*).
        if not all(any(fnmatchcase(p, o) for o in outer_list) for p in as_list(inner)):
            return False
    for flag, wanted in earlier.flags.items():
        if later.flags.get(flag) != wanted:
            return False
    return True
