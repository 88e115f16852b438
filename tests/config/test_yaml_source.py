"""The fast path of `parse_yaml` (values only, positions found later) against the reference
builder: the same value whenever it answers, and the reference decides everything else."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicerouter.config import yaml_source
from voicerouter.config.yaml_source import MAX_DEPTH, SourceMap, _Builder, _common_values, parse_yaml
from voicerouter.errors import ConfigError

pytestmark = pytest.mark.skipif(yaml_source._CParser is None, reason="the fast path needs libyaml")


def reference(text: str) -> tuple[object, SourceMap]:
    source = SourceMap("t.yaml")
    builder = _Builder(source)
    builder.build(yaml.parse(text, Loader=yaml_source._Loader))
    return builder.root, source


def agree(text: str) -> None:
    fast = _common_values(text)
    if fast is yaml_source._OUTSIDE:
        return
    root, eager = reference(text)  # must not raise when the fast path answered
    assert repr(fast) == repr(root)  # repr: NaN equals itself
    _, lazy = parse_yaml(text, "t.yaml")
    assert (lazy.values, lazy.keys, lazy.written) == (eager.values, eager.keys, eager.written)


scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                   st.sampled_from(["no", "on", "~", "2024-02-30", "2024-02-03", "0x1F", "1e400", ".nan", "<<", "0b", "1_0"]))
structure = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                         max_leaves=30)


@settings(max_examples=1500, deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.too_slow])
@given(structure, st.sampled_from(["block", "flow", "canonical"]))
def test_dumped_structures_read_the_same_on_both_paths(data, style):
    text = yaml.safe_dump(data, allow_unicode=True, default_flow_style=style == "flow", canonical=style == "canonical")
    agree(text)
    if style == "block" and not isinstance(data, (list, dict)) or style == "canonical":
        return
    assert _common_values(text) is not yaml_source._OUTSIDE  # plain dumps are the common subset


@settings(max_examples=1500, deadline=timedelta(seconds=10))
@given(st.text(alphabet="ab :-[]{},#&*!<>?|'\"\n\t 01.~", max_size=60))
def test_any_text_reads_the_same_on_both_paths(text):
    try:
        agree(text)
    except (yaml.YAMLError, ConfigError):
        pytest.fail("the fast path answered a text the reference refuses")


@pytest.mark.parametrize("text", [
    "a: 1\na: 2\n", "<<: {a: 1}\n", "a: &x 1\nb: *x\n", "a: !!int 3\n", "a: 1\n---\nb: 2\n", "",
    "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "? [a]\n: b\n", "a: !!binary aGk=\n",
])
def test_the_rest_goes_to_the_reference(text):
    assert _common_values(text) is yaml_source._OUTSIDE


@settings(max_examples=3000, deadline=timedelta(seconds=10))
@given(st.one_of(st.text(alphabet="0123456789.-+_:eEoxXbB~nNuUlLtTrRfFaAsSyYiI<=!&* ", max_size=12),
                 st.sampled_from(["yes", "No", "ON", "off", ".NaN", "-.inf", "0o17", "0x_1F", "190:20:30", "2001-12-14t21:59:43.10-05:00"])))
def test_one_pattern_says_which_plain_scalars_may_be_more_than_text(text):
    tag = yaml_source._RESOLVER.resolve(yaml.ScalarNode, text, (True, False))
    assert bool(yaml_source._MAYBE_TYPED(text)) == (tag != "tag:yaml.org,2002:str")
