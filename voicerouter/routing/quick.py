"""`resolve` of a plain table without the pydantic schema (whose import costs a one-off `resolve`
more than reading a 10,000-route table).

It answers only tables it is sure of: providers with a known type and text fields (type, kind,
model, voice, language, api_key), defaults and the winning route with nothing but stages (a name,
a list of names or a weighted split), no numbers, faults, state or serve. There the plan is what
`loader.resolve_file` gives (the winner's settings are the schema's defaults plus its stages), with
every check `validate` makes on the providers, the defaults and the winner. Anything else, and any
table such a check would fault, returns None and takes the schema's way, the reference; a property
test holds the two to the same answer.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from typing import Any

from voicerouter.config.secrets import mask_value
from voicerouter.routing.match import explain_match, first_match
from voicerouter.routing.plan import RouteContext
from voicerouter.routing.split import pick

TOP_KEYS = frozenset({"version", "providers", "defaults", "routes"})
STAGES = ("stt", "tts", "s2s")
SETTINGS_KEYS = frozenset(STAGES)
ROUTE_KEYS = frozenset({"name", "match", "description", *STAGES})
# ProviderConfig's text fields this path takes, in the schema's field order (a plan lists them so).
PROVIDER_FIELDS = ("type", "kind", "model", "voice", "language", "api_key")
KINDS = frozenset({"stt", "tts", "s2s", "call", "sms"})
LARGEST_WEIGHT = 2.0**53  # larger ints are left to the schema's conversion

# The schema's defaults as `model_dump()` gives them (tests/routing/test_quick.py holds them equal).
VAD = {"engine": "webrtc", "aggressiveness": 2, "threshold": None, "frame_ms": 30, "start_ms": 90, "stop_ms": 150,
       "preroll_ms": 300}
TURN = {"engine": "heuristic", "silence_ms": 600, "complete_silence_ms": 350, "incomplete_silence_ms": 1200,
        "digits_silence_ms": 1500, "min_pause_ms": 300, "min_turn_ms": 250, "max_turn_ms": 30000, "fillers": None}
AGENT = {"type": "echo", "name": None, "url": None, "base_url": None, "model": None, "api_key": None,
         "system_prompt": None, "timeout_ms": 5000, "headers": {}, "max_history": 20, "continuation": "assistant",
         "fallback_reply": None, "fallbacks": []}
_POLICY = {"retries": None, "first_result_timeout_ms": None, "stall_timeout_ms": None, "hedge_after_ms": None,
           "turn_deadline_ms": None}
RESILIENCE = {
    "retries": 1, "backoff": {"base_ms": 100, "max_ms": 2000}, "first_result_timeout_ms": 700, "stall_timeout_ms": 600,
    "hedge_after_ms": None, "hedge_budget": 0.1,
    "outlier": {"enabled": True, "margin_ms": 250, "min_samples": 5, "cooldown_s": 30}, "turn_deadline_ms": 8000,
    "breaker": {"failures": 3, "failure_rate": None, "window": 20, "cooldown_s": 30},
    "health": {"interval_s": None, "timeout_ms": 2000}, "max_concurrent_sessions": None,
    **{stage: _POLICY for stage in ("stt", "tts", "s2s", "agent", "call", "sms")},
}
BARGE_IN = {"enabled": True, "min_speech_ms": 200, "half_duplex": False}
DTMF = {"collect": True, "terminator": "#", "inter_digit_timeout_ms": 3000, "max_digits": None, "barge_in": True,
        "text": "{digits}", "mask": False}


class _Match:
    """A route's `match` as `explain_match` reads it."""

    def __init__(self, tenant: Any, region: Any, flags: dict[str, bool]) -> None:
        self.tenant, self.region, self.flags = tenant, region, flags


def quick_plan(data: Any, ctx: RouteContext, env: Mapping[str, str]) -> tuple[dict[str, Any], set[str], bool] | None:
    """(the plan as `SessionPlan.to_dict()` gives it, the flags the routes test, whether a stage is a
    split), or None when the table is not one this path is sure of."""
    del env  # referenced variables, set or not, give only info findings
    if data.__class__ is not dict or not data.keys() <= TOP_KEYS:
        return None
    if "version" in data and (data["version"].__class__ is not int or data["version"] != 1):
        return None
    kinds = _provider_kinds(data.get("providers"))
    defaults = data.get("defaults", {})
    routes = data.get("routes", [])
    if kinds is None or defaults.__class__ is not dict or routes.__class__ is not list:
        return None
    found = first_match(routes, ctx)
    if found is None:
        return None
    winner, flag_names = found
    if not defaults.keys() <= SETTINGS_KEYS or not _stages_ok(defaults, kinds):
        return None
    settings = dict(defaults)
    if winner is not None:
        route = routes[winner]
        if not route.keys() <= ROUTE_KEYS or route.get("description", "").__class__ is not str:
            return None
        own = {k: v for k, v in route.items() if k in SETTINGS_KEYS}
        if not _stages_ok(own, kinds):
            return None
        settings.update(own)
    pipeline = "s2s" if "s2s" in settings else "stt_tts"
    used = ("s2s",) if pipeline == "s2s" else ("stt", "tts")
    # The pipeline needs its stages: the route's (merged) settings, and the defaults on their own.
    if any(stage not in settings for stage in used) or any(stage not in defaults for stage in _needed(defaults)):
        return None
    warnings: list[str] = []
    if winner is None:
        name = "defaults"
        warning = (f"no route matched tenant={ctx.tenant or '-'} region={ctx.region or '-'}"
                   f"{''.join(f' {k}={str(v).lower()}' for k, v in sorted(ctx.flags.items()))}; defaults apply")
        warnings.append(warning)
        logging.getLogger("voicerouter.routing").warning(warning)
        reasons = ["no route matched: defaults apply"]
    else:
        name = routes[winner]["name"]
        match = routes[winner].get("match", {})
        explained = explain_match(_Match(match.get("tenant"), match.get("region"), match.get("flags", {})), ctx)
        if explained is None:
            return None
        reasons = explained
    stages = {stage: _stage_plan(stage, settings[stage], name, ctx) for stage in used}
    names = dict.fromkeys(p for s in stages.values() for p in s["providers"])
    providers: dict[str, Any] = data["providers"]
    plan = {
        "session_id": ctx.session_id,
        "tenant": ctx.tenant,
        "region": ctx.region,
        "flags": dict(ctx.flags),
        "route": name,
        "matched": winner is not None,
        "reasons": list(reasons),
        "pipeline": pipeline,
        **{stage: list(stages[stage]["providers"]) if stage in stages else None for stage in STAGES},
        "stages": stages,
        "vad": copy.deepcopy(VAD),
        "turn": copy.deepcopy(TURN),
        "agent": {k: mask_value(k, v) for k, v in copy.deepcopy(AGENT).items()},
        "resilience": copy.deepcopy(RESILIENCE),
        "barge_in": dict(BARGE_IN),
        "dtmf": dict(DTMF),
        "providers": {stage: list(s["providers"]) for stage, s in stages.items()},
        "provider_configs": {n: _provider_dump(providers[n]) for n in names},
        "warnings": warnings,
    }
    return plan, flag_names, any(s["strategy"] == "split" for s in stages.values())


def _needed(settings: dict[str, Any]) -> tuple[str, ...]:
    return ("s2s",) if "s2s" in settings else ("stt", "tts")


def _provider_kinds(providers: Any) -> dict[str, str] | None:
    """name -> kind of every provider, when each is one the schema and `validate` accept as is."""
    from voicerouter.config.secrets import BARE_REFERENCE
    from voicerouter.providers.registry import get_type

    if providers.__class__ is not dict:
        return None
    kinds: dict[str, str] = {}
    for name, cfg in providers.items():
        if name.__class__ is not str or cfg.__class__ is not dict or not cfg.keys() <= set(PROVIDER_FIELDS):
            return None
        if any(value.__class__ is not str or BARE_REFERENCE.search(value) for value in cfg.values()):
            return None
        ptype = get_type(cfg["type"]) if "type" in cfg else None
        if ptype is None:
            return None
        kind = cfg["kind"] if "kind" in cfg else ptype.default_kind
        if kind not in KINDS or kind not in ptype.kinds:
            return None
        if any(cfg.get(field) is None for field in (*ptype.required, *ptype.required_for.get(kind, ()))):
            return None
        kinds[name] = kind
    return kinds


def _stages_ok(settings: dict[str, Any], kinds: dict[str, str]) -> bool:
    """Each stage a name, a list or a split of known providers of that stage's kind, none twice."""
    for stage, spec in settings.items():
        names = _names(spec)
        if not names or len(set(names)) != len(names):
            return False
        if any(kinds.get(n) != stage for n in names):
            return False
    return True


def _names(spec: Any) -> list[str] | None:
    if spec.__class__ is str:
        return [spec]
    if spec.__class__ is list:
        return list(spec) if all(p.__class__ is str for p in spec) else None
    if spec.__class__ is not dict or not spec.keys() <= {"split", "fallback"}:
        return None
    split, fallback = spec.get("split"), spec.get("fallback", [])
    if split.__class__ is not dict or not split or fallback.__class__ is not list:
        return None
    for name, weight in split.items():
        if name.__class__ is not str or weight.__class__ not in (int, float):
            return None
        if not (math.isfinite(weight) and 0 < weight < LARGEST_WEIGHT):
            return None
    if not all(p.__class__ is str for p in fallback):
        return None
    return [*split, *fallback]


def _stage_plan(stage: str, spec: Any, route: str, ctx: RouteContext) -> dict[str, Any]:
    """`StagePlan.to_dict()` of `RoutingTable._stage_plan` for the shapes `_names` takes."""
    if spec.__class__ is str:
        return {"providers": [spec], "strategy": "failover"}
    if spec.__class__ is list:
        return {"providers": list(spec), "strategy": "failover"}
    weights = {name: float(weight) for name, weight in spec["split"].items()}
    chosen = pick(weights, ctx.session_id, salt=f"{route}:{stage}")
    rest = spec.get("fallback") or sorted((n for n in weights if n != chosen), key=lambda n: -weights[n])
    order = list(dict.fromkeys([chosen, *rest]))
    return {"providers": order, "strategy": "split", "split": weights, "picked": chosen}


def _provider_dump(cfg: dict[str, str]) -> dict[str, Any]:
    """`ProviderConfig.model_dump(exclude_none=True, by_alias=True)`, masked as a plan shows it."""
    out = {field: mask_value(field, cfg[field]) for field in PROVIDER_FIELDS if field in cfg}
    out["options"] = {}
    return out
