"""Replay expectations: parsing with located errors, checks that pass and fail, JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from voicerouter.config.yaml_source import parse_yaml
from voicerouter.errors import ConfigError
from voicerouter.session.expectations import check_results, contains_words, load_expectations, parse_expectations
from voicerouter.session.junit import junit_xml, write_junit
from voicerouter.session.replay import ReplayResult
from voicerouter.session.results import SessionError, SessionResult, TurnResult

SPEC = """
hello.wav:
  turns: 1
  words: [good morning, order]
two_turns*.wav:
  turns: 2
  words: [[account], [pay, bill]]
"*.wav":
  max_latency_ms: {tts_first_audio: 3000}
"""


def parse(text: str):
    data, source = parse_yaml(text, "expect.yaml")
    return parse_expectations(data, source)


def replayed(file: str, transcripts: list[str | None], *, first_audio: float = 1200.0, errors=()) -> ReplayResult:
    turns = [
        TurnResult(index=i, start_s=i * 3.0, end_s=i * 3.0 + 2, transcript=text,
                   latency_ms={"tts_first_audio": first_audio} if text is not None else {})
        for i, text in enumerate(transcripts, start=1)
    ]
    session = SessionResult("s1", "offline", "stt_tts", turns=turns, errors=list(errors))
    return ReplayResult(file=file, route="offline", session_id="s1", session=session)


def by_name(checks):
    return {(c.file.rsplit("/", 1)[-1], c.name): c for c in checks}


def test_all_expectations_pass():
    exp = parse(SPEC)
    results = [
        replayed("samples/hello.wav", ["good morning i would like to check the status of my order"]),
        replayed("samples/two_turns_8k.wav", ["my account number is one two", "i would like to pay my bill today"]),
    ]
    checks = check_results(exp, results)
    assert checks and all(c.passed for c in checks), [c for c in checks if not c.passed]
    names = by_name(checks)
    assert set(names) == {
        ("hello.wav", "no errors"), ("hello.wav", "turns"), ("hello.wav", "words"),
        ("hello.wav", "max_latency_ms tts_first_audio"),
        ("two_turns_8k.wav", "no errors"), ("two_turns_8k.wav", "turns"), ("two_turns_8k.wav", "words turn 1"),
        ("two_turns_8k.wav", "words turn 2"), ("two_turns_8k.wav", "max_latency_ms tts_first_audio"),
    }


def test_failures_say_what_is_wrong():
    exp = parse(SPEC)
    results = [
        replayed("hello.wav", ["good morning", "ordering"], first_audio=4500),
        replayed("two_turns_8k.wav", ["my cow number is"]),
        ReplayResult(file="two_turns_broken.wav", error="two_turns_broken.wav: file is truncated"),
    ]
    names = by_name(check_results(exp, results))
    assert names[("hello.wav", "turns")].message.startswith("expected 1 turn(s), got 2")
    assert not names[("hello.wav", "words")].passed
    assert "'order'" in names[("hello.wav", "words")].message  # "ordering" is not the word "order"
    assert names[("hello.wav", "max_latency_ms tts_first_audio")].message == "over 3000 ms: turn 1: 4500 ms, turn 2: 4500 ms"
    assert "'account'" in names[("two_turns_8k.wav", "words turn 1")].message
    assert names[("two_turns_8k.wav", "words turn 2")].message == "there is no turn 2 (got 1 turn(s))"
    broken = names[("two_turns_broken.wav", "replay")]
    assert not broken.passed and "truncated" in broken.message


def test_session_errors_fail_unless_allowed():
    err = SessionError("every stt provider failed", stage="stt", error_type="AllProvidersFailed", turn=1)
    result = replayed("hello.wav", [None], errors=[err])
    strict = by_name(check_results(parse("hello.wav: {}"), [result]))
    assert not strict[("hello.wav", "no errors")].passed
    assert "turn 1: stt: every stt provider failed" in strict[("hello.wav", "no errors")].message
    lenient = check_results(parse("hello.wav: {allow_errors: true}"), [result])
    assert lenient == []


def test_whole_word_phrase_matching():
    assert contains_words("Good morning, I would like", "good MORNING")
    assert contains_words("it's fine", "it's")
    assert not contains_words("goodmorning", "good morning")
    assert not contains_words("bills", "bill")
    assert contains_words("my account numbers", "number*") and contains_words("the number", "number*")
    assert not contains_words("renumber", "number*")


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("hello.wav:\n  turns: 1\n  wrods: [hi]\n", "unknown expectation 'wrods'", 3),
        ("hello.wav:\n  turns: two\n", "`turns` must be a whole number", 2),
        ("hello.wav:\n  words: [[a], b]\n", "`words` must be a list of words", 2),
        ("hello.wav:\n  max_latency_ms: {first_audio: 10}\n", "unknown latency 'first_audio'", 2),
        ("- hello.wav\n", "expectations must be a mapping", 1),
    ],
)
def test_bad_expectations_are_located(text, message, line):
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert message in str(info.value)
    assert info.value.location is not None and info.value.location.line == line
    assert str(info.value).startswith(f"expect.yaml:{line}")


def test_unused_patterns_are_reported(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("hello.wav: {turns: 1}\nhelo.wav: {turns: 1}\n")
    exp = load_expectations(path)
    assert exp.unused(["samples/hello.wav"]) == ["helo.wav"]


def test_junit_xml_lists_every_check(tmp_path):
    exp = parse(SPEC)
    checks = check_results(exp, [replayed("hello.wav", ["good morning"], first_audio=100)])
    path = write_junit(tmp_path / "reports" / "junit.xml", checks, time_s=1.5)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == str(len(checks)) and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [(c.file, c.name) for c in checks]
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == 1 and failed[0].get("name") == "words"
    assert "'order'" in failed[0].find("failure").get("message")


def test_junit_xml_escapes_and_redacts():
    from voicerouter.config.secrets import remember_secret
    from voicerouter.session.expectations import Check

    remember_secret("sk-test-SECRETVALUE123")
    xml = junit_xml([Check("a<b>.wav", "words", False, 'missing "x" & key sk-test-SECRETVALUE123')])
    root = ET.fromstring(xml.split("?>", 1)[1])
    failure = root.find("testsuite/testcase/failure")
    assert failure is not None and "SECRETVALUE" not in failure.get("message")
    assert root.find("testsuite/testcase").get("classname") == "a<b>.wav"


def test_errors_are_checked_once_per_file():
    exp = parse("hello.wav: {turns: 1}\n'*.wav': {max_latency_ms: {tts_first_audio: 5000}}\n")
    checks = check_results(exp, [replayed("hello.wav", ["hi"])])
    assert [c.name for c in checks] == ["no errors", "turns", "max_latency_ms tts_first_audio"]
    assert all(c.passed for c in checks)
