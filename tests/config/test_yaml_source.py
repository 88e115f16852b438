"""The fast path of `parse_yaml` (values only, positions found later) against the reference
builder: the same value whenever it answers, and the reference decides everything else."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicerouter.config import yaml_source
from voicerouter.config.yaml_source import (
    MAX_DEPTH,
    MAX_NODES,
    SourceMap,
    _block_values,
    _Builder,
    _common_values,
    parse_yaml,
)
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


# --- block-style tables read line by line, against the event path ----------------------------------


def typed(value: object) -> object:
    """A value with every scalar's type spelled out (True == 1 in Python; not here)."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, repr(value))


def block_agrees(text: str) -> bool:
    """The line reader answers only what the event path answers; True when it answered."""
    fast = _block_values(text)
    if fast is yaml_source._OUTSIDE:
        return False
    events = _common_values(text)
    assert events is not yaml_source._OUTSIDE, text
    assert typed(fast) == typed(events), text
    return True


names = st.text(alphabet="abnoyNOY01-_.$", min_size=1, max_size=6)
words = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), names,
                  st.text(alphabet="ab -*:,{}[]'\"#&!", max_size=6),
                  st.sampled_from(["no", "on", "~", "2024-02-30", "0x1F", "1e400", "<<", "${KEY}", "eu-*", "a:b", "---", "-1"]))
block_structure = st.recursive(words, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                              st.dictionaries(names, inner, max_size=4)),
                               max_leaves=30)


@settings(max_examples=1500, deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.too_slow])
@given(block_structure, st.sampled_from([2, 3, 4]), st.booleans())
def test_block_dumps_read_the_same_line_by_line(data, indent, sort_keys):
    text = yaml.safe_dump(data, default_flow_style=False, indent=indent, sort_keys=sort_keys)
    block_agrees(text)


def test_dumped_tables_of_names_and_numbers_are_read_line_by_line():
    table = {"version": 1, "providers": {"s": {"type": "pocketsphinx", "api_key": "${KEY}"}},
             "routes": [{"name": f"r{i}", "match": {"tenant": f"t{i}-*", "region": ["eu-*"], "flags": {"x": i % 2 == 0}},
                         "tts": {"split": {"a": 60, "b": 40}}, "stt": []} for i in range(20)]}
    assert block_agrees(yaml.safe_dump(table))
    assert block_agrees("# a comment\n" + yaml.safe_dump(table, indent=4) + "\n# the end\n")


lines = st.lists(st.tuples(st.sampled_from(["", " ", "  ", "    "]),
                           st.sampled_from(["a:", "b: 1", "- x", "- c: no", "- d:", "e: [] ", "f: {}", "- - y", "g: 'q'",
                                            "h: \"r\"", "# c", "i: j # k", "k: a: b", "-", "- ", "l:  m", "m: -1", "n: ~",
                                            "o:b", "p: x:y", "q: |", "r: &a 1", "s: *a", "---", "t: 'u''v'", "- [1]"])),
                 max_size=12)
# Lines the reader takes, nested every way (most such documents are answered).
good_lines = st.lists(st.tuples(st.sampled_from(["", "  ", "    ", " "]),
                                st.sampled_from(["a:", "b: 1", "- x", "- c: no", "- d:", "e: []", "l:  m", "m: -1", "n: ~",
                                                 "p: x:y", "g: 'q'", "-   f: 2", "- 'z'", "h:", "i: ${K}"])),
                      max_size=12)


@settings(max_examples=3000, deadline=timedelta(seconds=10))
@given(st.one_of(lines, good_lines))
def test_any_lines_read_the_same_line_by_line(parts):
    text = "\n".join(indent + line for indent, line in parts) + "\n"
    block_agrees(text)


@pytest.mark.parametrize("depth, answered", [(MAX_DEPTH - 1, True), (MAX_DEPTH, False)])
def test_the_line_reader_stops_at_the_nesting_limit(depth, answered):
    text = "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v: 1\n"
    assert (_block_values(text) is not yaml_source._OUTSIDE) is answered
    assert (_common_values(text) is not yaml_source._OUTSIDE) is answered


def test_the_line_reader_stops_at_the_size_limit():
    text = "".join(f"- {i}\n" for i in range(MAX_NODES + 1))
    assert _block_values(text) is yaml_source._OUTSIDE
