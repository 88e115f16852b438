"""`resolve` without the schema (routing/quick.py) answers exactly as the schema's way, or declines."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicerouter import RouteContext
from voicerouter.config import schema
from voicerouter.config.loader import resolve_file
from voicerouter.config.secrets import mask_value
from voicerouter.config.yaml_source import load_yaml
from voicerouter.errors import ConfigError
from voicerouter.routing import quick
from voicerouter.routing.quick import quick_plan

PLAIN = {"version": 1, "providers": {"s": {"type": "pocketsphinx"}, "t": {"type": "piper"},
                                     "d": {"type": "deepgram", "kind": "stt", "api_key": "${DG_KEY}"}},
         "defaults": {"stt": ["s"], "tts": ["t"]},
         "routes": [{"name": "acme", "match": {"tenant": "acme-*", "flags": {"beta": True}}, "stt": ["d", "s"],
                     "tts": {"split": {"t": 3}}}]}


def test_the_defaults_are_the_schemas():
    for constant, model in ((quick.VAD, schema.VadConfig), (quick.TURN, schema.TurnConfig),
                            (quick.RESILIENCE, schema.ResilienceConfig), (quick.BARGE_IN, schema.BargeInConfig),
                            (quick.DTMF, schema.DtmfConfig)):
        assert json.dumps(constant) == json.dumps(model().model_dump())  # ints stay ints, floats floats
    agent = {k: mask_value(k, v) for k, v in schema.AgentConfig().model_dump().items()}
    assert json.dumps(quick.AGENT) == json.dumps(agent)
    fields = list(schema.ProviderConfig.model_fields)
    assert [f for f in fields if f in quick.PROVIDER_FIELDS] == list(quick.PROVIDER_FIELDS)


def _reference(path, ctx):
    try:
        plan, flag_names = resolve_file(path, ctx, env={})
    except ConfigError as exc:
        return exc
    split = any(stage.strategy == "split" for stage in plan.stages() + plan.carrier_stages())
    return plan.to_dict(), flag_names, split


def _agrees(tmp_path, data, ctx) -> bool:
    """Quick's answer equals the reference's, or quick declines; True when quick answered."""
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    loaded, _ = load_yaml(path)
    answer = quick_plan(loaded, ctx, {})
    if answer is None:
        return False
    expected = _reference(path, ctx)
    assert not isinstance(expected, Exception), f"quick answered a table the schema's way refuses: {expected}"
    assert json.dumps(answer[0], indent=2) == json.dumps(expected[0], indent=2)
    assert answer[1:] == expected[1:]
    return True


def test_a_plain_table_is_answered_as_the_schema_answers(tmp_path):
    for tenant, flags in (("acme-1", {"beta": True}), ("acme-1", {}), (None, {})):
        assert _agrees(tmp_path, PLAIN, RouteContext(tenant=tenant, flags=flags, session_id="s1"))


def test_unusual_tables_are_declined():
    ctx = RouteContext(tenant="acme-1", flags={"beta": True})
    for change in ({"numbers": {"+1555": {"tenant": "x"}}}, {"version": True},
                   {"defaults": {"stt": ["s"], "tts": ["t"], "vad": {"engine": "silero"}}},
                   {"providers": {**PLAIN["providers"], "b": {"type": "piper", "base_url": "http://x"}}},
                   {"providers": {**PLAIN["providers"], "b": {"type": "nosuch"}}},
                   {"defaults": {"stt": ["s", "s"], "tts": ["t"]}}):
        assert quick_plan({**PLAIN, **change}, ctx, {}) is None


names = st.sampled_from(["s", "t", "d", "r", "s", "t", "x"])
GOOD = {"s": {"type": "pocketsphinx"}, "t": {"type": "piper"}, "d": {"type": "deepgram", "kind": "stt", "api_key": "${K}"},
        "r": {"type": "openai-realtime", "api_key": "${K}", "model": "m"}}
provider = st.fixed_dictionaries(
    {"type": st.sampled_from(["pocketsphinx", "piper", "deepgram", "openai-realtime", "azure", "twilio", "nosuch"])},
    optional={"kind": st.sampled_from(["stt", "tts", "s2s", "sms", "", "bad"]),
              "api_key": st.sampled_from(["${K}", "literal", "$BARE", "a${K}b"]),
              "model": st.sampled_from(["m", "$M", ""]), "voice": st.just("v"),
              "base_url": st.just("http://127.0.0.1:1/v1"), "sample_rate": st.sampled_from([16000, 0])})
weight = st.sampled_from([1, 3, 2.5, 0, -1, float("nan"), float("inf"), True, "2", 2**60])
good_weight = st.sampled_from([1, 3, 2.5, 0.5])
OF_KIND = {"stt": ["s", "d", "s", "d", "t"], "tts": ["t", "t", "t", "x"], "s2s": ["r", "r", "r", "s"]}


def plain_stage(kind):
    """Mostly names of providers of that kind (so the quick way has tables to answer)."""
    of_kind = st.sampled_from(OF_KIND[kind])
    split = st.fixed_dictionaries(
        {"split": st.dictionaries(of_kind, st.one_of(good_weight, good_weight, good_weight, weight), min_size=1, max_size=3)},
        optional={"fallback": st.lists(of_kind, max_size=2)})
    return st.one_of(of_kind, st.lists(of_kind, min_size=1, max_size=2), split)


odd_stage = st.one_of(st.lists(names, max_size=3), st.fixed_dictionaries({"providers": st.lists(names, max_size=2)}),
                      st.fixed_dictionaries({"split": st.just({})}), st.none(), st.just(7))
odd_settings = st.fixed_dictionaries(
    {}, optional={"pipeline": st.sampled_from(["s2s", "stt_tts"]), "agent": st.sampled_from(["echo", {"type": "webhook"}]),
                  "instructions": st.just("hi"), "vad": st.just({"engine": "silero"})})
pattern = st.sampled_from(["a", "a*", "b", "*", ["a", "b*"], "a", "b?", [], 3, None])
match = st.fixed_dictionaries({}, optional={"tenant": pattern, "region": pattern,
                                            "flags": st.dictionaries(st.sampled_from(["x", "y"]), st.booleans())})


def one_in(draw, n: int) -> bool:
    """True about once in n draws (hypothesis favours small integers, so not `integers(0, n) == 0`)."""
    return draw(st.floats(0, 1, exclude_max=True)) * n >= n - 1


@st.composite
def stages(draw, kinds=("stt", "tts", "s2s")):
    out = {}
    for kind in kinds:
        if not one_in(draw, 3):
            out[kind] = draw(st.one_of(plain_stage(kind), plain_stage(kind), plain_stage(kind), odd_stage))
    if one_in(draw, 8):
        out.update(draw(odd_settings))
    return out


@st.composite
def tables(draw):
    data = {}
    if draw(st.booleans()):
        data["version"] = draw(st.sampled_from([1, 1, 1, 1, 2, True]))
    providers = {} if one_in(draw, 4) else dict(GOOD)
    if not providers or one_in(draw, 4):
        providers.update(draw(st.dictionaries(names, provider, min_size=1, max_size=2 if providers else 4)))
    data["providers"] = providers
    if not one_in(draw, 5):  # mostly a pipeline: stt and tts, or s2s
        data["defaults"] = {"stt": draw(plain_stage("stt")), "tts": draw(plain_stage("tts"))} if not one_in(draw, 4) else {"s2s": "r"}
        if one_in(draw, 5):
            data["defaults"].update(draw(stages()))
    else:
        data["defaults"] = draw(stages())
    routes = []
    for i in range(draw(st.integers(0, 5))):
        route = {"name": draw(st.sampled_from([f"r{i}", f"r{i}", f"r{i}", 5])), "match": draw(match), **draw(stages())}
        if one_in(draw, 10):
            route["description"] = draw(st.sampled_from(["d", None]))
        routes.append(route)
    data["routes"] = routes
    if one_in(draw, 10):
        data["numbers"] = {"+15550100": {"tenant": "a"}}
    return data


contexts = st.builds(RouteContext, tenant=st.sampled_from(["a", "b", "ab", None]), region=st.sampled_from(["a", None]),
                     flags=st.dictionaries(st.sampled_from(["x", "y", "z"]), st.booleans(), max_size=2),
                     session_id=st.sampled_from(["s1", "s2", "other"]))


@settings(max_examples=1000, deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables(), contexts)
def test_quick_answers_as_the_schema_or_declines(tmp_path, data, ctx):
    _agrees(tmp_path, data, ctx)


@settings(max_examples=300, deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(match, max_size=6), contexts)
def test_quick_answers_plain_tables_it_can(tmp_path, matches, ctx):
    """Tables of the common shape (the property above sees mostly declines) are answered, and alike."""
    data = {**PLAIN, "routes": [{"name": f"r{i}", "match": m, "tts": ["t"]} for i, m in enumerate(matches)]}
    usual = all(all(not isinstance(v, int) and v not in ([], None) for k, v in m.items() if k != "flags")
                for m in matches)
    assert _agrees(tmp_path, data, ctx) or not usual


def test_resolve_of_a_plain_table_imports_no_pydantic(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(PLAIN))
    code = ("import sys; from voicerouter.cli.fast import fast_path; "
            f"fast_path(['resolve', '--routes', {str(path)!r}, '--tenant', 'acme-1', '--flag', 'beta', '--json']); "
            "print('pydantic' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"VOICEROUTER_NO_CACHE": "1", "PATH": "", **_pythonpath()})
    assert json.loads(done.stdout)["route"] == "acme"
    assert done.stderr.strip().splitlines()[-1] == "False"


def _pythonpath() -> dict[str, str]:
    import os

    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
