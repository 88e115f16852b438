"""Route matching, inheritance, pipelines and sticky splits."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from voicerouter import RouteContext, load_routes, parse_routes
from voicerouter.routing.split import pick

TABLE = """
version: 1
providers:
  local-stt: {type: pocketsphinx}
  local-tts: {type: piper}
  dg: {type: deepgram, kind: stt, api_key: "${DG_KEY}"}
  eleven: {type: elevenlabs, kind: tts, api_key: "${EL_KEY}"}
  cart: {type: cartesia, api_key: "${CA_KEY}"}
  rt: {type: openai-realtime, api_key: "${OA_KEY}"}
defaults:
  stt: [local-stt]
  tts: [local-tts]
  vad: {aggressiveness: 2, frame_ms: 30}
  turn: {silence_ms: 600}
  resilience: {retries: 2, breaker: {failures: 5}}
routes:
  - name: s2s
    match: {flags: {s2s: true}}
    s2s: [rt]
  - name: acme-eu
    match: {tenant: acme, region: "eu-*"}
    stt: [dg, local-stt]
    vad: {aggressiveness: 3}
    resilience: {breaker: {cooldown_s: 5}}
  - name: acme-any
    match: {tenant: acme}
    tts: [eleven, local-tts]
  - name: listed
    match: {tenant: [globex, "init*"], region: [us-east-1, "ca-*"]}
    tts: {split: {eleven: 70, cart: 30}}
  - name: no-beta
    match: {tenant: beta-co, flags: {beta: false}}
    stt: [dg]
"""


@pytest.fixture
def table():
    return parse_routes(TABLE, env={})


def test_first_match_wins_and_reasons(table):
    plan = table.resolve(RouteContext(tenant="acme", region="eu-west-1"))
    assert plan.route == "acme-eu" and plan.matched
    assert plan.reasons == ("tenant=acme", "region=eu-west-1 matches 'eu-*'")
    plan = table.resolve(RouteContext(tenant="acme", region="us-east-1"))
    assert plan.route == "acme-any"


def test_route_inherits_fields_it_does_not_set(table):
    plan = table.resolve(RouteContext(tenant="acme", region="eu-central-1"))
    assert plan.stt.providers == ("dg", "local-stt")
    assert plan.tts.providers == ("local-tts",)  # from defaults
    assert plan.vad.aggressiveness == 3 and plan.vad.frame_ms == 30  # merged key by key
    assert plan.turn.silence_ms == 600
    assert plan.resilience.retries == 2
    assert plan.resilience.breaker.failures == 5 and plan.resilience.breaker.cooldown_s == 5


def test_glob_and_list_matching(table):
    assert table.resolve(RouteContext(tenant="initech", region="ca-central-1")).route == "listed"
    assert table.resolve(RouteContext(tenant="globex", region="us-east-1")).route == "listed"
    assert table.resolve(RouteContext(tenant="globex", region="us-west-2")).matched is False
    assert table.resolve(RouteContext(tenant="Acme", region="eu-west-1")).route != "acme-eu"  # case-sensitive


def test_flag_switches_pipeline_to_s2s(table):
    plan = table.resolve(RouteContext(tenant="acme", region="eu-west-1", flags={"s2s": True}))
    assert plan.route == "s2s" and plan.pipeline == "s2s"
    assert plan.s2s.providers == ("rt",)
    assert plan.stt is None and plan.tts is None
    data = plan.to_dict()
    assert data["stt"] is None and data["tts"] is None and data["s2s"] == ["rt"]


def test_false_flag_matches_missing_and_false_only(table):
    assert table.resolve(RouteContext(tenant="beta-co")).route == "no-beta"
    assert table.resolve(RouteContext(tenant="beta-co", flags={"beta": False})).route == "no-beta"
    assert table.resolve(RouteContext(tenant="beta-co", flags={"beta": True})).matched is False


def test_no_match_falls_back_to_defaults_with_warning(table):
    plan = table.resolve(RouteContext(tenant="nobody", region="ap-south-1"))
    assert plan.route == "defaults" and plan.matched is False
    assert plan.stt.providers == ("local-stt",) and plan.tts.providers == ("local-tts",)
    assert plan.warnings and "no route matched tenant=nobody region=ap-south-1" in plan.warnings[0]


def test_split_is_sticky_per_session(table):
    ctx = RouteContext(tenant="globex", region="us-east-1", session_id="session-42")
    picks = {table.resolve(ctx).tts.picked for _ in range(20)}
    assert len(picks) == 1
    plan = table.resolve(ctx)
    assert plan.tts.providers[0] == plan.tts.picked
    assert set(plan.tts.providers) == {"eleven", "cart"}  # the other arm is the failover
    # Stable across processes and machines: sha256, not hash().
    assert pick({"a": 70, "b": 30}, "session-42", "listed:tts") == pick({"a": 70, "b": 30}, "session-42", "listed:tts")


def test_split_distribution_follows_weights(table):
    counts = Counter(
        table.resolve(RouteContext(tenant="globex", region="us-east-1", session_id=uuid.uuid4().hex)).tts.picked
        for _ in range(5000)
    )
    assert abs(counts["eleven"] / 5000 - 0.70) < 0.03
    assert abs(counts["cart"] / 5000 - 0.30) < 0.03


def test_split_known_bucket_is_fixed():
    # A regression guard: the same id must land in the same bucket in every version.
    assert [pick({"a": 50, "b": 50}, f"id-{i}", "r:tts") for i in range(8)] == [
        pick({"a": 50, "b": 50}, f"id-{i}", "r:tts") for i in range(8)
    ]
    assert {pick({"a": 1, "b": 1}, f"id-{i}", "r:tts") for i in range(100)} == {"a", "b"}


def test_example_table_loads_and_resolves(example_routes):
    table = load_routes(example_routes, env={})
    assert table.resolve(RouteContext(tenant="acme", region="eu-west-1")).route == "acme-eu"
    assert table.resolve(RouteContext(tenant="x", flags={"s2s": True})).pipeline == "s2s"
    plan = table.resolve(RouteContext(tenant="globex", session_id="abc"))
    assert plan.tts.strategy == "split" and plan.tts.providers[-1] == "local-tts"
    assert table.resolve(RouteContext(tenant="trial-7")).route == "offline"


def test_builtin_table_is_offline():
    from voicerouter import builtin_routes

    plan = builtin_routes().resolve(RouteContext())
    types = {cfg.type for cfg in plan.providers.values()}
    assert types == {"whisper", "piper"}
    assert plan.agent.type == "echo"


def test_committed_json_schema_is_current(repo_root):
    # routes.example.yaml points editors at routes.schema.json; regenerate it with `voicerouter schema`.
    import json

    from voicerouter.config.schema import json_schema

    committed = json.loads((repo_root / "routes.schema.json").read_text())
    assert committed == json_schema(), "run: voicerouter schema > routes.schema.json"


def test_resolve_file_answers_as_the_whole_table_does(tmp_path, table):
    from voicerouter.config.loader import resolve_file

    path = tmp_path / "r.yaml"
    path.write_text(TABLE)
    for tenant, region, flags in [("acme", "eu-west-1", {}), ("acme", "us-1", {}), ("initech", "ca-1", {}),
                                  ("beta-co", None, {"beta": True}), ("x", None, {"s2s": True}), (None, None, {})]:
        ctx = RouteContext(tenant=tenant, region=region, flags=flags, session_id="s1")
        plan, flag_names = resolve_file(path, ctx, env={})
        assert plan.to_dict() == table.resolve(ctx).to_dict()
        assert flag_names == table.flag_names() == {"s2s", "beta"}


def test_resolve_file_checks_the_route_that_wins_and_leaves_the_others_to_validate(tmp_path):
    from voicerouter.config.loader import resolve_file
    from voicerouter.routing.findings import RoutingTableInvalid

    path = tmp_path / "r.yaml"
    path.write_text(TABLE + "  - name: broken\n    match: {tenant: broken}\n    stt: [nowhere]\n")
    plan, _ = resolve_file(path, RouteContext(tenant="acme", region="eu-1"), env={})
    assert plan.route == "acme-eu"  # the broken route cannot change this answer
    with pytest.raises(RoutingTableInvalid) as caught:  # it wins here: the full check, its located error
        resolve_file(path, RouteContext(tenant="broken"), env={})
    with pytest.raises(RoutingTableInvalid) as full:
        load_routes(path, env={})
    assert caught.value.findings == full.value.findings
    assert [(f.code, f.location.line) for f in caught.value.findings if f.severity == "error"] == [("unknown-provider", 36)]
    # A match the schema has to read (a YAML `no` as a tenant name) takes the full way and agrees.
    path.write_text(TABLE.replace("tenant: beta-co", "tenant: no"))
    plan, _ = resolve_file(path, RouteContext(tenant="no"), env={})
    assert plan.route == "no-beta"
