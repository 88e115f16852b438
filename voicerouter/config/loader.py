"""Load a routing table: YAML -> schema check -> per-route effective settings -> `RoutingTable`.

Routes inherit from `defaults`: mappings (vad, turn, agent, resilience, barge_in, dtmf) merge key by
key, stages (stt, tts, s2s) are replaced whole. Every problem becomes a located `Finding`;
`load_routes` raises `RoutingTableInvalid` if any is an error.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from voicerouter.config.schema import RouteSettings, RoutingTableConfig
from voicerouter.config.yaml_source import PathKey, SourceMap, load_yaml, parse_yaml
from voicerouter.routing.findings import Finding, RoutingTableInvalid
from voicerouter.routing.match import first_match
from voicerouter.routing.table import RoutingTable

if TYPE_CHECKING:
    from voicerouter.routing.plan import RouteContext, SessionPlan

M = TypeVar("M", bound=BaseModel)
ROUTE_ONLY_KEYS = frozenset({"name", "match", "description"})
STAGE_KEYS = frozenset({"stt", "tts", "s2s", "call", "sms"})
BUILTIN_NAME = "builtin:offline"


def load_routes(path: str | Path, *, env: Mapping[str, str] | None = None) -> RoutingTable:
    """Read and check a routing table file; raises `ConfigError` (with file:line) when it is unusable."""
    data, source = load_yaml(path)
    return _build_or_raise(data, source, env)


def parse_routes(text: str, *, name: str = "<string>", env: Mapping[str, str] | None = None) -> RoutingTable:
    data, source = parse_yaml(text, name)
    return _build_or_raise(data, source, env)


def resolve_file(path: str | Path, ctx: RouteContext, *, env: Mapping[str, str] | None = None,
                 data: Any = None) -> tuple[SessionPlan, set[str]]:
    """`load_routes(path).resolve(ctx)` for a one-off question (`voicerouter resolve`), checking what
    the answer depends on: every route's `match` is read as written to find the winner, then the
    table cut down to its providers, defaults, numbers and that one route is checked as `validate`
    checks a table. The other routes' settings, and table-wide analyses such as shadowing, are left
    to `validate`. Anything unusual (a match the schema would have to convert, an error finding)
    takes the full way, so a broken table fails exactly as `load_routes` fails.
    `data` is the file as `load_yaml` read it, when the caller has it already.
    Returns the plan and the names of the flags the table's routes test."""
    if data is None:
        data, _ = load_yaml(path)
    answer = _resolve_cut(data, str(path), ctx, os.environ if env is None else env)
    if answer is not None:
        return answer
    table = load_routes(path, env=env)
    return table.resolve(ctx), table.flag_names()


def _resolve_cut(data: Any, name: str, ctx: RouteContext, env: Mapping[str, str]) -> tuple[SessionPlan, set[str]] | None:
    if not isinstance(data, dict) or not isinstance(data.get("routes", []), list):
        return None
    routes: list[Any] = data.get("routes", [])
    found = first_match(routes, ctx)
    if found is None:
        return None
    winner, flag_names = found
    cut = {**data, "routes": [routes[winner]] if winner is not None else []}
    table, findings = build_table(cut, SourceMap(name), env=env)  # positions unused: errors go the full way
    if table is None or any(f.severity == "error" for f in findings):
        return None
    plan = table.resolve(ctx)
    return (plan, flag_names) if plan.matched == (winner is not None) else None


def builtin_routes() -> RoutingTable:
    """The embedded offline table: whisper (partials from moonshine) + piper + echo agent, no key, no network."""
    from importlib import resources  # here: importing it costs `resolve` and `validate` ~10 ms

    text = resources.files("voicerouter.config").joinpath("builtin.yaml").read_text("utf-8")
    return parse_routes(text, name=BUILTIN_NAME)


def _build_or_raise(data: Any, source: SourceMap, env: Mapping[str, str] | None) -> RoutingTable:
    table, findings = build_table(data, source, env=env)
    if table is None or any(f.severity == "error" for f in findings):
        raise RoutingTableInvalid(findings)
    return table


def build_table(
    data: Any, source: SourceMap, *, env: Mapping[str, str] | None = None
) -> tuple[RoutingTable | None, list[Finding]]:
    """Everything `validate` reports: schema findings first, then the semantic checks."""
    from voicerouter.routing.checks import check_table

    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "nothing"
        return None, [
            Finding("error", "not-a-mapping", f"the routing table must be a mapping, found {kind}", source.locate(()))
        ]
    try:
        config = validate_as_written(RoutingTableConfig, data, source)
    except ValidationError as exc:
        return None, schema_findings(exc, data, source, ())
    settings: list[RouteSettings] = []
    findings: list[Finding] = []
    raw_defaults = data.get("defaults") or {}
    # Routes that override the same things the same way share one (frozen) RouteSettings.
    seen: dict[str, tuple[dict[str, Any], RouteSettings | ValidationError]] = {}
    for index, route in enumerate(data.get("routes") or []):
        override = {k: v for k, v in route.items() if k not in ROUTE_ONLY_KEYS}
        signature = json.dumps(override, sort_keys=True, default=repr)
        if signature not in seen:
            merged = merge_settings(raw_defaults, override)
            try:
                seen[signature] = merged, RouteSettings.model_validate(merged)
            except ValidationError as exc:
                seen[signature] = merged, exc
        merged, outcome = seen[signature]
        if isinstance(outcome, ValidationError):
            findings += schema_findings(outcome, merged, source, ("routes", index))
            settings.append(config.defaults)
        else:
            settings.append(outcome)
    table = RoutingTable(config, settings, source)
    findings += check_table(table, env=os.environ if env is None else env)
    table.warnings = tuple(str(f) for f in findings if f.severity == "warning")
    return table, findings


def validate_as_written(model: type[M], data: dict[str, Any], source: SourceMap) -> M:
    """`model.model_validate(data)`, where a field typed as text that YAML read as a bool, number or
    null (`tenant: no`, `name: 1234`) gets the text as written. Fixes `data` in place."""
    while True:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            fixed = False
            for error in exc.errors(include_url=False):
                if error["type"] != "string_type":
                    continue
                path = data_path(error["loc"], data)
                written = source.written.get(path)
                parent = _value_at(data, path[:-1]) if path else None
                if written is not None and isinstance(parent, (dict, list)) and not isinstance(_value_at(data, path), str):
                    parent[path[-1]] = written
                    fixed = True
            if not fixed:
                raise


def merge_settings(defaults: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A route's settings: its own fields over the defaults (mappings merged, stages replaced)."""
    merged = copy.deepcopy(defaults)
    for key, value in override.items():
        base = merged.get(key)
        if key == "agent" and _agent_type(value) != _agent_type(base):
            merged[key] = copy.deepcopy(value)  # another agent type: nothing to inherit
        elif key not in STAGE_KEYS and isinstance(base, dict) and isinstance(value, dict):
            merged[key] = _deep_merge(base, value)
        elif key == "agent" and isinstance(value, str) and isinstance(base, dict):
            merged[key] = base  # same type, named by shorthand: keep the defaults' options
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _agent_type(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("type", "echo")
    return None


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# Messages for the union-typed stage fields, where pydantic's per-branch errors confuse more than help.
STAGE_SHAPE = "must be a provider name, a list of names, {split: {name: weight}} or {strategy: ..., providers: [...]}"


def schema_findings(exc: ValidationError, data: Any, source: SourceMap, prefix: PathKey) -> list[Finding]:
    """Turn pydantic errors into located findings, one per offending value."""
    findings: list[Finding] = []
    seen: set[tuple[PathKey, str]] = set()
    for error in exc.errors(include_url=False):
        if not _stage_branch_applies(error["loc"], data):
            continue  # an error of a stage shape the value plainly is not
        path = data_path(error["loc"], data)
        full = prefix + path
        if len(path) >= 1 and path[-1] in STAGE_KEYS and _is_union_noise(error["loc"], path):
            message = f"{_dotted(full)} {STAGE_SHAPE}"
            code = "bad-stage"
        elif error["type"] == "extra_forbidden":
            from voicerouter.suggest import did_you_mean

            maybe = did_you_mean(str(full[-1]), known_keys(full)) if full else ""
            message = f"unknown key {_dotted(full)!s}{maybe}"
            code = "unknown-key"
        elif error["type"] == "missing":
            message = f"missing required key {_dotted(full)}"
            code = "missing-key"
        else:
            message = f"{_dotted(full)}: {error['msg']}"
            code = "schema"
        if (full, message) in seen:
            continue
        seen.add((full, message))
        location = source.locate(full, key=code == "unknown-key")
        findings.append(Finding("error", code, message, location))
    return findings


def known_keys(path: PathKey) -> list[str]:
    """The keys the schema allows next to the last key of `path` (for "did you mean")."""
    node: Any = RoutingTableConfig
    for part in path[:-1]:
        node = _step(node, part)
        if node is None:
            return []
    return [name for model in _models(node) for name in model.model_fields]


def _step(node: Any, part: Any) -> Any:
    import typing

    from pydantic import BaseModel

    for candidate in _alternatives(node):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            field = candidate.model_fields.get(part) if isinstance(part, str) else None
            if field is not None:
                return field.annotation
        origin = typing.get_origin(candidate)
        if origin is list and isinstance(part, int):
            return typing.get_args(candidate)[0]
        if origin is dict and isinstance(part, str):
            return typing.get_args(candidate)[1]
    return None


def _alternatives(node: Any) -> list[Any]:
    """A type and, for unions and Annotated, the types inside it."""
    import types
    import typing

    origin = typing.get_origin(node)
    if origin is typing.Annotated:
        return _alternatives(typing.get_args(node)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [alt for arg in typing.get_args(node) for alt in _alternatives(arg)]
    return [node]


def _models(node: Any) -> list[Any]:
    from pydantic import BaseModel

    return [c for c in _alternatives(node) if isinstance(c, type) and issubclass(c, BaseModel)]


def _stage_branch_applies(loc: tuple[Any, ...], data: Any) -> bool:
    """For a stage field's union, keep only the errors of the shape the value was written in
    (a mapping with `split` is a split, with `providers` a chain, a list a list)."""
    for i, part in enumerate(loc[:-1]):
        if part in STAGE_KEYS and isinstance(loc[i + 1], str) and _looks_like_tag(loc[i + 1]):
            value = _value_at(data, data_path(loc[: i + 1], data))
            wanted = (
                "SplitSpec" if isinstance(value, dict) and "split" in value
                else "ChainSpec" if isinstance(value, dict) and "providers" in value
                else "list[str]" if isinstance(value, list)
                else None
            )
            return wanted is None or loc[i + 1] == wanted
    return True


def _value_at(data: Any, path: PathKey) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _is_union_noise(loc: tuple[Any, ...], path: PathKey) -> bool:
    # pydantic inserts branch tags ("list[str]", "SplitSpec", ...) after a union field's name.
    return len(loc) > len(path)


def data_path(loc: tuple[Any, ...], data: Any) -> PathKey:
    """Keep the parts of a pydantic location that exist in the data (drops union branch tags)."""
    path: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and not _looks_like_tag(part):
            path.append(part)  # a missing or extra key: still a real name
            node = None
    return tuple(path)


def _looks_like_tag(part: str) -> bool:
    return part[:1].isupper() or "[" in part or part in ("str", "int", "float", "bool", "function-before")


def _dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<document>"
