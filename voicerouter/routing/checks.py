"""Semantic checks of a schema-valid routing table (what `voicerouter validate` reports beyond the schema).

No network and no provider code: provider facts come from the static registry.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from voicerouter.config import secrets
from voicerouter.config.schema import ChainSpec, ProviderConfig, RouteSettings, SplitSpec, StageSpec
from voicerouter.config.yaml_source import PathKey
from voicerouter.netaddr import parse_url, url_problem, without_credentials
from voicerouter.providers.registry import get_type, provider_types
from voicerouter.routing.findings import Finding, Severity
from voicerouter.routing.shadow import ShadowIndex
from voicerouter.routing.table import RoutingTable
from voicerouter.suggest import did_you_mean

STAGES = ("stt", "tts", "s2s", "call", "sms")
BARE_REFERENCE = secrets.BARE_REFERENCE


class _Collector:
    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self.findings: list[Finding] = []

    def add(self, severity: Severity, code: str, message: str, path: PathKey, *, key: bool = False) -> None:
        self.findings.append(Finding(severity, code, message, self.table.source.locate(path, key=key)))


def check_table(table: RoutingTable, *, env: Mapping[str, str]) -> list[Finding]:
    out = _Collector(table)
    kinds = _check_providers(table, out)
    _check_settings(table.config.defaults, ("defaults",), kinds, out, is_defaults=True)
    seen_names: dict[str, int] = {}
    shadows = ShadowIndex()
    for index, route in enumerate(table.config.routes):
        path = ("routes", index)
        if route.name in seen_names:
            out.add("error", "duplicate-route", f"route name {route.name!r} is already used by routes[{seen_names[route.name]}]", path + ("name",))
        seen_names.setdefault(route.name, index)
        # Check the route's own stage specs where it wrote them, then the effective (merged) settings.
        _check_settings(table.route_settings[index], path, kinds, out, is_defaults=False, raw=_raw_route(table, index))
        earlier_index = shadows.shadowed_by(route.match)
        if earlier_index is not None:
            earlier = table.config.routes[earlier_index].name
            out.add("error", "shadowed-route", f"route {route.name!r} can never match: route {earlier!r} (routes[{earlier_index}]) before it matches every session it would", path + ("match",))
        shadows.add(route.match)
    _check_unused(table, out)
    _check_secrets(table, env, out)
    _check_numbers(table, out)
    return out.findings


def _check_numbers(table: RoutingTable, out: _Collector) -> None:
    """`numbers:` keys are E.164 numbers or globs; an entry an earlier glob covers can never match."""
    from fnmatch import fnmatchcase

    from voicerouter.routing.numbers import E164_PATTERN, normalize

    seen: list[str] = []
    for pattern in table.config.numbers:
        path = ("numbers", pattern)
        if not E164_PATTERN.match(pattern):
            out.add("error", "bad-number", f"numbers: {pattern!r} is not an E.164 number or glob (like +15551230000 or +4420*)", path, key=True)
            continue
        literal = not any(c in pattern for c in "*?[")
        for earlier in seen:
            if (literal and fnmatchcase(normalize(pattern), earlier)) or earlier == "+*":
                out.add("warning", "shadowed-number", f"numbers: {pattern!r} can never match: {earlier!r} before it matches it", path, key=True)
                break
        if not literal:
            seen.append(pattern)


def _raw_route(table: RoutingTable, index: int) -> RouteSettings | None:
    return table.config.routes[index]


def _check_providers(table: RoutingTable, out: _Collector) -> dict[str, str | None]:
    """Check each provider instance; returns name -> kind (None when unknown)."""
    kinds: dict[str, str | None] = {}
    known = ", ".join(sorted(provider_types()))
    for name, cfg in table.config.providers.items():
        path = ("providers", name)
        ptype = get_type(cfg.type)
        if ptype is None:
            maybe = did_you_mean(cfg.type, provider_types())
            out.add("error", "unknown-type", f"provider {name!r}: unknown type {cfg.type!r}{maybe or f' (known: {known})'}", path + ("type",))
            kinds[name] = cfg.kind
            continue
        kind = cfg.kind or ptype.default_kind
        if cfg.kind and cfg.kind not in ptype.kinds:
            out.add("error", "wrong-kind", f"provider {name!r}: type {cfg.type} has no {cfg.kind} (it offers {'/'.join(ptype.kinds)})", path + ("kind",))
        elif kind is None:
            out.add("error", "missing-kind", f"provider {name!r}: type {cfg.type} offers {'/'.join(ptype.kinds)}; set kind", path)
        kinds[name] = kind
        for required in (*ptype.required, *ptype.required_for.get(kind or "", ())):
            if getattr(cfg, required) is None:
                secret = required in ("api_key", "auth_token")
                hint = f" (e.g. ${{{ptype.env_vars[0]}}})" if secret and ptype.env_vars else ""
                label = ProviderConfig.model_fields[required].alias or required
                out.add("error", "missing-option", f"provider {name!r}: type {cfg.type} needs {label}{hint}", path)
        if cfg.base_url:
            _check_url(cfg.base_url, f"provider {name!r}", path + ("base_url",), out)
    return kinds


def _check_url(url: str, owner: str, path: PathKey, out: _Collector) -> None:
    """The clients' own URL check (`netaddr.url_problem`), with `${VAR}` references standing in for values."""
    shown = without_credentials(url)
    probe, placeholders = _with_placeholders(url)
    userinfo, at, _ = probe.partition("://")[2].split("/", 1)[0].rpartition("@")
    if at:
        user, _, password = userinfo.partition(":")
        credential = password or user
        if credential not in placeholders:
            out.add("error", "credentials-in-url", f"{owner}: {shown!r} has a credential written in the URL; use a reference like https://user:${{PASSWORD}}@host", path)
    schemes = ("wss", "ws") if probe.lower().startswith(("ws:", "wss:")) else ("https", "http")
    problem = url_problem(probe, schemes=schemes)
    if problem is None:
        return
    if "non-loopback" in problem and any(p in parse_url(probe).host for p in placeholders):
        return  # the host comes from the environment: checked when the session starts
    code = "insecure-url" if "non-loopback" in problem else "bad-url"
    out.add("error", code, f"{owner}: {shown!r} {problem}", path)


def _with_placeholders(url: str) -> tuple[str, set[str]]:
    """`url` with each `${VAR}` replaced by a plain word (so it parses), and those words."""
    placeholders: set[str] = set()

    def word(match: re.Match[str]) -> str:
        placeholders.add(f"vrref{len(placeholders)}x")
        return f"vrref{len(placeholders) - 1}x"

    return secrets.REFERENCE.sub(word, url), placeholders


def stage_names(spec: StageSpec | None) -> list[str]:
    """Provider names a stage spec refers to (name, list, chain or split with its fallback)."""
    if spec is None:
        return []
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, list):
        return list(spec)
    if isinstance(spec, ChainSpec):
        return list(spec.providers)
    return list(spec.split) + list(spec.fallback)


def _check_settings(
    settings: RouteSettings,
    path: PathKey,
    kinds: dict[str, str | None],
    out: _Collector,
    *,
    is_defaults: bool,
    raw: Any = None,
) -> None:
    owner = "defaults" if is_defaults else f"route {getattr(raw, 'name', path)!r}"
    own = raw.model_fields_set if raw is not None else None
    for stage in STAGES:
        spec = getattr(settings, stage)
        if spec is None or (own is not None and stage not in own):
            continue  # inherited stages were checked in defaults
        stage_path = path + (stage,)
        names = stage_names(spec)
        if not names:
            out.add("error", "empty-chain", f"{owner}: {stage} lists no provider", stage_path)
        if isinstance(spec, SplitSpec):
            for name, weight in spec.split.items():
                if weight <= 0:
                    out.add("error", "bad-weight", f"{owner}: {stage} split weight of {name!r} must be > 0 (got {weight:g})", stage_path + ("split", name))
        duplicates = {n for n in names if names.count(n) > 1}
        for name in sorted(duplicates):
            out.add("error", "duplicate-provider", f"{owner}: {stage} lists {name!r} more than once", stage_path)
        for name in dict.fromkeys(names):
            if name not in kinds:
                maybe = did_you_mean(name, kinds)
                out.add("error", "unknown-provider", f"{owner}: {stage} uses {name!r}, which is not defined under providers{maybe}", stage_path)
            elif kinds[name] is not None and kinds[name] != stage:
                out.add("error", "wrong-kind", f"{owner}: {stage} uses {name!r}, which is a {kinds[name]} provider", stage_path)
    pipeline = settings.pipeline or ("s2s" if settings.s2s is not None else "stt_tts")
    needed = ("s2s",) if pipeline == "s2s" else ("stt", "tts")
    voice = settings.pipeline is not None or any(getattr(settings, s) is not None for s in ("stt", "tts", "s2s"))
    if not voice and (settings.call is not None or settings.sms is not None):
        needed = ()  # a carriers-only table (outbound calls and SMS) needs no voice pipeline
    for stage in needed:
        if getattr(settings, stage) is None:
            out.add("error", "missing-stage", f"{owner}: the {pipeline} pipeline needs {stage} providers", path)
    agent = settings.agent
    if own is None or "agent" in own:
        if agent.type == "webhook" and not agent.url:
            out.add("error", "missing-option", f"{owner}: the webhook agent needs url", path + ("agent",))
        if agent.type == "openai-chat" and not agent.model:
            out.add("error", "missing-option", f"{owner}: the openai-chat agent needs model", path + ("agent",))
        for field, url in (("url", agent.url), ("base_url", agent.base_url)):
            if url:
                _check_url(url, f"{owner} agent", path + ("agent", field), out)


def used_providers(table: RoutingTable) -> list[str]:
    """Every provider some route (or the defaults) can send a session to, in table order."""
    used: set[str] = set()
    for settings in [table.config.defaults, *table.route_settings]:
        for stage in STAGES:
            used.update(stage_names(getattr(settings, stage)))
    return [name for name in table.config.providers if name in used]


def _check_unused(table: RoutingTable, out: _Collector) -> None:
    used = set(used_providers(table))
    for name in table.config.providers:
        if name not in used:
            out.add("warning", "unused-provider", f"provider {name!r} is not used by defaults or any route", ("providers", name), key=True)


def _secret_values(table: RoutingTable) -> Iterator[tuple[str, str, PathKey]]:
    """(field, value, path) of every string the table holds in providers and agents."""
    for name, cfg in table.config.providers.items():
        yield from _strings(cfg, ("providers", name))
    yield from _strings(table.config.defaults.agent, ("defaults", "agent"))
    yield from _strings(table.config.serve, ("serve",))
    for index, route in enumerate(table.config.routes):
        if "agent" in route.model_fields_set:
            yield from _strings(route.agent, ("routes", index, "agent"))


def _strings(model: ProviderConfig | Any, path: PathKey) -> Iterator[tuple[str, str, PathKey]]:
    for field, value in model.model_dump().items():
        if isinstance(value, str):
            yield field, value, path + (field,)
        elif isinstance(value, dict):
            for key, inner in value.items():
                if isinstance(inner, str):
                    yield str(key), inner, path + (field, key)


def _check_secrets(table: RoutingTable, env: Mapping[str, str], out: _Collector) -> None:
    for field, value, path in _secret_values(table):
        for var in secrets.references(value):
            if not env.get(var):
                out.add("info", "unset-env", f"environment variable {var} is referenced but not set here", path)
        bare = BARE_REFERENCE.findall(value)
        for var in bare:
            out.add("error", "bare-env-ref", f"{field}: {'$' + var!r} is not an environment reference; write \"${{{var}}}\" (with braces)", path)
        if secrets.is_secret_field(field) and not secrets.references(value) and not bare:
            out.add("warning", "literal-secret", f"{field} holds a literal secret; use an environment reference like ${{{field.upper()}}}", path)
