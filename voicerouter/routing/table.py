"""`RoutingTable.resolve`: first matching route wins, else defaults (with a warning)."""

from __future__ import annotations

import heapq
import logging
import re
from collections.abc import Iterable, Iterator
from fnmatch import translate
from functools import lru_cache
from typing import TYPE_CHECKING

from voicerouter.config.schema import ChainSpec, RouteConfig, RouteSettings, RoutingTableConfig, SplitSpec, StageSpec
from voicerouter.routing.match import as_list, explain_match
from voicerouter.routing.plan import RouteContext, SessionPlan, Stage, StagePlan
from voicerouter.routing.split import pick

if TYPE_CHECKING:
    from voicerouter.config.yaml_source import SourceMap

log = logging.getLogger("voicerouter.routing")
DEFAULTS = "defaults"


class RoutingTable:
    """A checked routing table. Build it with `load_routes`; it is immutable and cheap to resolve."""

    def __init__(self, config: RoutingTableConfig, route_settings: list[RouteSettings], source: SourceMap) -> None:
        self.config = config
        self.route_settings = route_settings  # effective settings of routes[i], defaults merged in
        self.source = source
        self.warnings: tuple[str, ...] = ()
        self._matchers = [_Matcher(route) for route in config.routes]
        # Routes that name literal tenants are indexed by tenant, routes with tenant globs by the
        # globs' literal prefixes (`acme-*` under `acme-`); the rest are checked for everyone.
        self.tenant_index: dict[str, list[int]] = {}
        self.prefix_index: dict[str, list[int]] = {}
        self.any_tenant: list[int] = []
        for index, matcher in enumerate(self._matchers):
            tenant = matcher.tenant
            if not matcher.has_tenant or "" in tenant.prefixes:
                self.any_tenant.append(index)
            elif tenant.literals is not None:
                for literal in tenant.literals:
                    self.tenant_index.setdefault(literal, []).append(index)
            else:
                for prefix in dict.fromkeys(tenant.prefixes):
                    self.prefix_index.setdefault(prefix, []).append(index)

    @property
    def file(self) -> str:
        return self.source.file

    @property
    def routes(self) -> list[RouteConfig]:
        return self.config.routes

    def flag_names(self) -> set[str]:
        """The flags the routes test (a flag given to `resolve` that none tests is likely a typo)."""
        return {name for route in self.config.routes for name in route.match.flags}

    def match(self, ctx: RouteContext) -> tuple[int | None, list[str]]:
        """Index of the winning route (None for defaults) and why it won."""
        for index in self.candidates(ctx.tenant):
            if self._matchers[index].accepts(ctx):
                reasons = explain_match(self.config.routes[index].match, ctx)
                assert reasons is not None
                return index, reasons
        return None, []

    def candidates(self, tenant: str | None) -> Iterable[int]:
        """Indices of the routes that could accept `tenant`, in table order (each once)."""
        if tenant is None:
            return self.any_tenant
        lists = [self.tenant_index.get(tenant, [])]
        if self.prefix_index:
            lists += [self.prefix_index.get(tenant[:n], []) for n in range(1, len(tenant) + 1)]
        lists = [found for found in lists if found]
        if not lists:
            return self.any_tenant
        return _unique(heapq.merge(self.any_tenant, *lists))

    def resolve(self, ctx: RouteContext) -> SessionPlan:
        index, reasons = self.match(ctx)
        warnings: list[str] = []
        if index is None:
            settings, name = self.config.defaults, DEFAULTS
            warning = (
                f"no route matched tenant={ctx.tenant or '-'} region={ctx.region or '-'}"
                f"{''.join(f' {k}={str(v).lower()}' for k, v in sorted(ctx.flags.items()))}; defaults apply"
            )
            warnings.append(warning)
            log.warning(warning)
            reasons = ["no route matched: defaults apply"]
        else:
            settings, name = self.route_settings[index], self.config.routes[index].name
        pipeline = settings.pipeline or ("s2s" if settings.s2s is not None else "stt_tts")
        used = ("s2s",) if pipeline == "s2s" else ("stt", "tts")
        stages = {stage: self._stage_plan(stage, getattr(settings, stage), name, ctx)
                  for stage in (*used, "call", "sms")}
        names = dict.fromkeys(p for s in stages.values() if s for p in s.providers)
        return SessionPlan(
            context=ctx,
            route=name,
            matched=index is not None,
            reasons=tuple(reasons),
            pipeline=pipeline,
            stt=stages.get("stt"),
            tts=stages.get("tts"),
            s2s=stages.get("s2s"),
            vad=settings.vad,
            turn=settings.turn,
            agent=settings.agent,
            resilience=settings.resilience,
            barge_in=settings.barge_in,
            dtmf=settings.dtmf,
            instructions=settings.instructions,
            providers={n: self.config.providers[n] for n in names if n in self.config.providers},
            warnings=tuple(warnings),
            call=stages.get("call"),
            sms=stages.get("sms"),
        )

    @staticmethod
    def _stage_plan(stage: Stage, spec: StageSpec | None, route: str, ctx: RouteContext) -> StagePlan | None:
        if spec is None:
            return None
        if isinstance(spec, str):
            return StagePlan(stage, (spec,))
        if isinstance(spec, list):
            return StagePlan(stage, tuple(spec))
        if isinstance(spec, ChainSpec):
            return StagePlan(stage, tuple(spec.providers), strategy=spec.strategy)
        assert isinstance(spec, SplitSpec)
        chosen = pick(spec.split, ctx.session_id, salt=f"{route}:{stage}")
        # After the sticky pick: the explicit fallback list, else the other arms by weight.
        rest = spec.fallback or sorted((n for n in spec.split if n != chosen), key=lambda n: -spec.split[n])
        order = tuple(dict.fromkeys([chosen, *rest]))
        return StagePlan(stage, order, strategy="split", split=dict(spec.split), picked=chosen)


def _unique(indices: Iterable[int]) -> Iterator[int]:
    """Sorted indices without repeats (a route filed under two of a tenant's prefixes)."""
    last = -1
    for index in indices:
        if index != last:
            yield index
            last = index


_GLOB = re.compile(r"[*?\[]")


class _Matcher:
    """A route's match, cheap to build and to test: literal sets, and globs compiled to one regex
    per field only when a value gets past the globs' literal prefixes (10,000 distinct globs would
    otherwise cost seconds of regex compilation at load)."""

    __slots__ = ("tenant", "region", "flags", "has_tenant", "has_region")

    def __init__(self, route: RouteConfig) -> None:
        spec = route.match
        self.has_tenant = spec.tenant is not None
        self.has_region = spec.region is not None
        self.tenant = _Patterns(spec.tenant)
        self.region = _Patterns(spec.region)
        self.flags = tuple(spec.flags.items())

    def accepts(self, ctx: RouteContext) -> bool:
        if self.has_tenant and not self.tenant.hit(ctx.tenant):
            return False
        if self.has_region and not self.region.hit(ctx.region):
            return False
        return all(ctx.flags.get(name, False) == wanted for name, wanted in self.flags)


class _Patterns:
    """(literal set) when every pattern is literal; else globs with their literal prefixes."""

    __slots__ = ("literals", "globs", "prefixes")

    def __init__(self, patterns: str | list[str] | None) -> None:
        values = as_list(patterns)
        self.literals: frozenset[str] | None = None
        self.globs: tuple[str, ...] = ()
        self.prefixes: tuple[str, ...] = ()
        if values and not any(_GLOB.search(v) for v in values):
            self.literals = frozenset(values)
        elif values:
            self.globs = tuple(values)
            self.prefixes = tuple(v[: m.start()] if (m := _GLOB.search(v)) else v for v in values)

    def hit(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.literals is not None:
            return value in self.literals
        if not any(value.startswith(prefix) for prefix in self.prefixes):
            return False
        return bool(_regex(self.globs).match(value))


@lru_cache(maxsize=4096)
def _regex(globs: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for a list of globs (cached: big tables repeat `eu-*` on many routes)."""
    return re.compile("|".join(f"(?:{translate(v)})" for v in globs))
