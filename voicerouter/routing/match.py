"""Does a route's `match` accept a session, and why (the explanation `resolve` prints)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

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


MATCH_KEYS = frozenset({"tenant", "region", "flags"})


def first_match(routes: list[Any], ctx: RouteContext) -> tuple[int | None, set[str]] | None:
    """Over routes as read from the YAML, not yet checked by the schema: the index of the first one
    whose match accepts the session (None: no route does) and the flags every route tests; None
    when any route's name or match is not in the plain form the schema takes unchanged."""
    winner: int | None = None
    flag_names: set[str] = set()
    for index, route in enumerate(routes):
        if route.__class__ is not dict or route.get("name").__class__ is not str:
            return None
        match = route.get("match", {})
        if match.__class__ is not dict or not match.keys() <= MATCH_KEYS:
            return None
        tenant, region, flags = match.get("tenant"), match.get("region"), match.get("flags", {})
        if not (_patterns_as_written(tenant) and _patterns_as_written(region)) or flags.__class__ is not dict:
            return None
        for flag, wanted in flags.items():
            if flag.__class__ is not str or wanted.__class__ is not bool:
                return None
        flag_names.update(flags)
        if winner is None and accepts(tenant, region, flags, ctx):
            winner = index
    return winner, flag_names


def _patterns_as_written(patterns: Any) -> bool:
    """A tenant/region value the schema takes unchanged: unset, a text, or a non-empty list of texts."""
    if patterns is None or patterns.__class__ is str:
        return True
    return patterns.__class__ is list and bool(patterns) and all(p.__class__ is str for p in patterns)
