"""Property-based: any routing table, well-formed or hostile, goes through load/validate/resolve
with located findings or a plan, never an internal error or a hang; the shadow index agrees with
the pairwise definition."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicerouter import RouteContext, parse_routes
from voicerouter.config.loader import build_table
from voicerouter.config.schema import MatchSpec
from voicerouter.config.yaml_source import parse_yaml
from voicerouter.errors import ConfigError
from voicerouter.routing.match import covers, explain_match
from voicerouter.routing.shadow import ShadowIndex

FAST = settings(max_examples=400, deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.too_slow])

# Small alphabets so patterns collide often (that is where shadowing happens).
word = st.text(alphabet="ab-1", min_size=0, max_size=4)
pattern = st.one_of(word, word.map(lambda w: w + "*"), word.map(lambda w: "*" + w), st.sampled_from(["a?", "[ab]*", "*"]))
patterns = st.one_of(st.none(), pattern, st.lists(pattern, min_size=1, max_size=3))
flags = st.dictionaries(st.sampled_from(["x", "y", "z"]), st.booleans(), max_size=3)
match_spec = st.builds(lambda t, r, f: MatchSpec(tenant=t, region=r, flags=f), patterns, patterns, flags)


@settings(max_examples=600, deadline=timedelta(seconds=10))
@given(st.lists(match_spec, max_size=20))
def test_shadow_index_finds_exactly_the_first_covering_route(specs):
    index = ShadowIndex()
    for i, spec in enumerate(specs):
        expected = next((j for j in range(i) if covers(specs[j], spec)), None)
        assert index.shadowed_by(spec) == expected
        index.add(spec)


# Hostile scalars: YAML 1.1 surprises, tags, control characters, non-finite numbers, long text.
nasty = st.one_of(
    st.sampled_from(["no", "yes", "on", "off", "~", "null", "2024-02-30", "2024-02-03", "0x1F", "1e400", ".nan", "-.inf",
                     "!!int abc", "!!float x", "!!bool maybe", "!!timestamp x", "!!binary '@@'", "!!python/object:os.system x",
                     "&a [*a]", "*nope", "'\\x00'", '"a\\nb: c"', "[", "{", "]]", "<<: {a: 1}", "? [a]: b"]),
    st.text(max_size=12),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


def table_text(tenants, regions, weights, names, extra):
    lines = ["version: 1", "providers:", "  s: {type: pocketsphinx}", "  t: {type: piper}",
             f"  u: {{type: piper, options: {{x: {extra}, y: [{extra}]}}}}",  # vendor extras: any YAML value
             "defaults: {stt: [s], tts: [t]}", "routes:"]
    for tenant, region, weight, name in zip(tenants, regions, weights, names, strict=False):
        lines.append(f"  - name: {name}")
        lines.append(f"    match: {{tenant: {tenant}, region: {region}}}")
        lines.append(f"    tts: {{split: {{t: {weight}, u: 1}}}}")
    lines.append(f"seed: {extra}")
    return "\n".join(lines) + "\n"


@FAST
@given(st.lists(nasty, max_size=5), st.lists(nasty, max_size=5), st.lists(nasty, max_size=5),
       st.lists(nasty, max_size=5), nasty)
def test_hostile_scalars_give_findings_or_a_table(tenants, regions, weights, names, extra):
    text = table_text(tenants, regions, weights, names, extra)
    try:
        data, source = parse_yaml(text, "t.yaml")
    except ConfigError as exc:
        assert exc.location is not None and exc.location.file == "t.yaml"
        return
    table, findings = build_table(data, source, env={})
    for finding in findings:
        assert finding.location.file == "t.yaml" and "\n" not in str(finding)
    if table is not None and not any(f.severity == "error" for f in findings):
        for settings_ in table.route_settings:
            split = settings_.tts.split if hasattr(settings_.tts, "split") else {}
            assert all(math.isfinite(w) and w > 0 for w in split.values())
        for tenant in [None, "a", "no", *[t for t in tenants if isinstance(t, str)]]:
            plan = table.resolve(RouteContext(tenant=tenant, region="a"))
            json.dumps(plan.to_dict(), allow_nan=False)  # what resolve --json prints
            if plan.matched:
                route = next(r for r in table.routes if r.name == plan.route)
                assert explain_match(route.match, plan.context) is not None


@settings(max_examples=2000, deadline=timedelta(seconds=10))
@given(st.text(max_size=300))
def test_any_text_is_a_table_or_a_located_error(text):
    try:
        table = parse_routes(text, name="t.yaml", env={})
    except ConfigError as exc:
        assert exc.location is not None and exc.location.file == "t.yaml"
        return
    table.resolve(RouteContext())


structure = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=30,
)


@FAST
@given(st.dictionaries(st.sampled_from(["version", "providers", "defaults", "routes", "faults", "seed", "x"]), structure))
def test_any_structure_is_a_table_or_located_findings(data):
    text = yaml.safe_dump(data, allow_unicode=True)
    try:
        parsed, source = parse_yaml(text, "t.yaml")
    except ConfigError as exc:
        assert exc.location is not None
        return
    table, findings = build_table(parsed, source, env={})
    assert table is not None or findings


@pytest.mark.slow
def test_cli_on_generated_tables_exits_only_with_documented_codes(tmp_path):
    """Hostile tables through `validate` (all in one process) and `resolve` (one process each)."""
    examples: list[str] = []

    @settings(max_examples=200, database=None)
    @given(st.lists(nasty, max_size=4), st.lists(nasty, max_size=4), st.lists(nasty, max_size=4),
           st.lists(nasty, max_size=4), nasty)
    def collect(tenants, regions, weights, names, extra):
        examples.append(table_text(tenants, regions, weights, names, extra))

    collect()
    paths = []
    for i, text in enumerate(examples):
        path = tmp_path / f"t{i:03d}.yaml"
        path.write_text(text)
        paths.append(path)
    proc = subprocess.run([sys.executable, "-m", "voicerouter", "validate", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1) and "internal error" not in proc.stderr + proc.stdout, proc.stderr
    for path in paths[:: max(1, len(paths) // 15)]:
        proc = subprocess.run([sys.executable, "-m", "voicerouter", "resolve", "--routes", str(path), "--tenant", "no", "--json"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode in (0, 1, 2) and "internal error" not in proc.stderr, proc.stderr
        if proc.returncode == 0:
            json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))  # no NaN


contexts = st.builds(lambda t, r, f: RouteContext(tenant=t, region=r, flags=f, session_id="s"),
                     st.one_of(st.none(), word), st.one_of(st.none(), word), flags)


@FAST
@given(st.lists(match_spec, max_size=12), st.lists(contexts, min_size=1, max_size=5))
def test_resolve_file_answers_as_the_whole_table_does(tmp_path_factory, specs, ctxs):
    from voicerouter.config.loader import resolve_file

    routes = [{"name": f"r{i}", "match": spec.model_dump(exclude_defaults=True), "tts": ["u"] if i % 2 else ["t"]}
              for i, spec in enumerate(specs)]
    text = yaml.safe_dump({"providers": {"s": {"type": "pocketsphinx"}, "t": {"type": "piper"}, "u": {"type": "piper"}},
                           "defaults": {"stt": ["s"], "tts": ["t"]}, "routes": routes})
    path = tmp_path_factory.mktemp("t") / "t.yaml"
    path.write_text(text)
    try:
        table = parse_routes(text, env={})
    except ConfigError:
        table = None  # shadowed routes: `resolve` still answers (validate reports them)
    for ctx in ctxs:
        plan, flag_names = resolve_file(path, ctx, env={})
        expected = table.resolve(ctx) if table is not None else None
        if expected is not None:  # the table's indexes (tenant literals, glob prefixes) find the same route
            assert plan.to_dict() == expected.to_dict()
            assert flag_names == table.flag_names()
        index = next((i for i, spec in enumerate(specs) if explain_match(spec, ctx) is not None), None)
        assert plan.route == (f"r{index}" if index is not None else "defaults")


@FAST
@given(st.lists(match_spec, max_size=15), st.lists(contexts, min_size=1, max_size=6))
def test_the_tables_indexes_find_the_first_matching_route(specs, ctxs):
    from voicerouter.config.yaml_source import SourceMap

    data = {"providers": {"s": {"type": "pocketsphinx"}, "t": {"type": "piper"}}, "defaults": {"stt": ["s"], "tts": ["t"]},
            "routes": [{"name": f"r{i}", "match": spec.model_dump(exclude_defaults=True)} for i, spec in enumerate(specs)]}
    table, _ = build_table(data, SourceMap("t.yaml"), env={})  # shadowed routes too: they must never win
    assert table is not None
    for ctx in ctxs:
        index, _ = table.match(ctx)
        assert index == next((i for i, spec in enumerate(specs) if explain_match(spec, ctx) is not None), None)
