"""What a replayed file must produce (`voicerouter replay --expect FILE`), checked after the run.

The YAML maps a file name or glob to its expectations; every entry that matches a file applies:

    hello.wav:
      turns: 1                         # exact number of turns
      words: [hello]                   # flat list: each word somewhere in the file's transcripts
    two_turns_8k.wav:
      words: [[weather], [thank]]      # list of lists: words of turn 1, of turn 2, ...
    "*.wav":
      max_latency_ms: {turn_end_delay: 1000}    # per turn, every turn that has the measure
      max_wall_latency_ms: {tts_first_audio: 3000}
      allow_errors: false              # default: any session error fails the file

`max_latency_ms` checks latencies on the session's audio clock (`turn_end_delay`,
`tts_first_audio`, `voice_to_voice`): in a fast replay they are exact and the same on every run
(the audio stands still while providers answer, so they measure when the turn ended and the reply
began); with `--realtime` they follow the wall clock to within a frame. `max_wall_latency_ms`
checks what the providers really took on this machine (`stt_final` and `agent` too), which varies
with its load: give those generous limits.

Words are matched case-insensitively as whole words (a phrase matches as a sequence of words);
a trailing `*` matches any ending (`number*` matches "numbers").
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicerouter.config.yaml_source import SourceMap, load_yaml
from voicerouter.errors import ConfigError
from voicerouter.session.results import AUDIO_LATENCY_KEYS, LATENCY_KEYS

if TYPE_CHECKING:
    from voicerouter.session.replay import ReplayResult

KEYS = ("turns", "words", "max_latency_ms", "max_wall_latency_ms", "allow_errors")


@dataclass(frozen=True)
class FileExpectation:
    pattern: str
    turns: int | None = None
    words_per_turn: tuple[tuple[str, ...], ...] | None = None
    words_anywhere: tuple[str, ...] | None = None
    max_latency_ms: dict[str, float] = field(default_factory=dict)  # audio clock
    allow_errors: bool = False
    max_wall_latency_ms: dict[str, float] = field(default_factory=dict)

    def matches(self, path: str) -> bool:
        name = os.path.basename(path)
        return any(fnmatch.fnmatchcase(candidate, self.pattern) for candidate in (name, path, Path(path).as_posix()))


@dataclass(frozen=True)
class Check:
    """One expectation on one file; a JUnit test case."""

    file: str
    name: str
    passed: bool
    message: str = ""


@dataclass
class Expectations:
    entries: list[FileExpectation]
    source: str = "<expectations>"

    def for_file(self, path: str) -> list[FileExpectation]:
        return [e for e in self.entries if e.matches(path)]

    def unused(self, paths: list[str]) -> list[str]:
        """Patterns that match none of `paths` (likely typos)."""
        return [e.pattern for e in self.entries if not any(e.matches(p) for p in paths)]


def load_expectations(path: str | os.PathLike[str]) -> Expectations:
    data, source = load_yaml(path)
    return parse_expectations(data, source)


def parse_expectations(data: Any, source: SourceMap) -> Expectations:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            "expectations must be a mapping of file name or glob to expectations",
            location=source.locate(()),
            hint="e.g. `hello.wav: {turns: 1, words: [hello]}`",
        )
    return Expectations([_entry(str(pattern), spec, source) for pattern, spec in data.items()], source.file)


def _entry(pattern: str, spec: Any, source: SourceMap) -> FileExpectation:
    where = (pattern,)
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise ConfigError(f"expectations for {pattern!r} must be a mapping", location=source.locate(where))
    for key in spec:
        if key not in KEYS:
            raise ConfigError(
                f"unknown expectation {key!r} for {pattern!r}", location=source.locate((*where, key), key=True),
                hint=f"known: {', '.join(KEYS)}",
            )
    turns = spec.get("turns")
    if turns is not None and (isinstance(turns, bool) or not isinstance(turns, int) or turns < 0):
        raise ConfigError("`turns` must be a whole number >= 0", location=source.locate((*where, "turns")))
    per_turn, anywhere = _words(spec.get("words"), source, (*where, "words"))
    limits = _limits(spec, "max_latency_ms", AUDIO_LATENCY_KEYS, source, where)
    wall_limits = _limits(spec, "max_wall_latency_ms", LATENCY_KEYS, source, where)
    allow = spec.get("allow_errors", False)
    if not isinstance(allow, bool):
        raise ConfigError("`allow_errors` must be true or false", location=source.locate((*where, "allow_errors")))
    return FileExpectation(pattern, turns, per_turn, anywhere, limits, allow, wall_limits)


def _limits(
    spec: dict[str, Any], key: str, known: tuple[str, ...], source: SourceMap, where: tuple[Any, ...]
) -> dict[str, float]:
    raw = spec.get(key) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"`{key}` must map a latency name to milliseconds", location=source.locate((*where, key)))
    limits: dict[str, float] = {}
    for name, value in raw.items():
        loc = source.locate((*where, key, name))
        if name not in known:
            hint = f"known: {', '.join(known)}"
            if name in LATENCY_KEYS:
                hint = f"{name} is only measured on the wall clock: use max_wall_latency_ms"
            raise ConfigError(f"unknown latency {name!r}", location=loc, hint=hint)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{key}.{name} must be a positive number of milliseconds", location=loc)
        limits[name] = float(value)
    return limits


def _words(
    value: Any, source: SourceMap, where: tuple[Any, ...]
) -> tuple[tuple[tuple[str, ...], ...] | None, tuple[str, ...] | None]:
    if value is None:
        return None, None
    bad = ConfigError(
        "`words` must be a list of words, or a list of word lists (one per turn)",
        location=source.locate(where), hint="e.g. words: [hello] or words: [[weather], [thanks]]",
    )
    if not isinstance(value, list):
        raise bad
    if all(isinstance(w, str | int | float) and not isinstance(w, bool) for w in value):
        return None, tuple(str(w) for w in value)
    if all(isinstance(turn, list) for turn in value):
        turns = []
        for turn in value:
            if not all(isinstance(w, str | int | float) and not isinstance(w, bool) for w in turn):
                raise bad
            turns.append(tuple(str(w) for w in turn))
        return tuple(turns), None
    raise bad


def contains_words(text: str, phrase: str) -> bool:
    """Whole-word, case-insensitive match of `phrase` (one or more words, `*` ends a prefix) in `text`."""
    words = re.findall(r"[\w']+\*?", phrase.lower())
    if not words:
        return True
    # "number*" matches any word starting with "number" (number, numbers).
    parts = [re.escape(w[:-1]) + r"[\w']*" if w.endswith("*") else re.escape(w) for w in words]
    pattern = r"(?<![\w'])" + r"\W+".join(parts) + r"(?![\w'])"
    return re.search(pattern, text.lower()) is not None


def check_results(expectations: Expectations, results: list[ReplayResult]) -> list[Check]:
    checks: list[Check] = []
    for result in results:
        entries = expectations.for_file(result.file)
        if not entries:
            continue
        file, session = result.file, result.session
        if session is None:
            checks.append(Check(file, "replay", False, f"the file was not replayed: {result.error}"))
            continue
        # Errors are checked once per file; any matching entry with `allow_errors: true` allows them.
        if not any(e.allow_errors for e in entries):
            if session.errors:
                listed = "; ".join(f"turn {e.turn}: {e.stage}: {e.message}" for e in session.errors[:3])
                checks.append(Check(file, "no errors", False, f"{len(session.errors)} error(s): {listed}"))
            else:
                checks.append(Check(file, "no errors", True))
        for entry in entries:
            checks.extend(check_file(entry, result))
    return checks


def check_file(entry: FileExpectation, result: ReplayResult) -> list[Check]:
    """The turn, word and latency checks of one entry (errors are checked by `check_results`)."""
    file = result.file
    session = result.session
    if session is None:
        return [Check(file, "replay", False, f"the file was not replayed: {result.error}")]
    checks: list[Check] = []
    turns = session.turns
    if entry.turns is not None:
        ok = len(turns) == entry.turns
        texts = ", ".join(repr(t.transcript or "") for t in turns)
        checks.append(Check(file, "turns", ok, "" if ok else f"expected {entry.turns} turn(s), got {len(turns)}: {texts}"))
    if entry.words_anywhere is not None:
        text = " ".join(t.transcript or "" for t in turns)
        missing = [w for w in entry.words_anywhere if not contains_words(text, w)]
        checks.append(Check(file, "words", not missing,
                            f"missing {', '.join(map(repr, missing))} in transcript {text!r}" if missing else ""))
    for i, words in enumerate(entry.words_per_turn or (), start=1):
        name = f"words turn {i}"
        if i > len(turns):
            checks.append(Check(file, name, False, f"there is no turn {i} (got {len(turns)} turn(s))"))
            continue
        text = turns[i - 1].transcript or ""
        missing = [w for w in words if not contains_words(text, w)]
        checks.append(Check(file, name, not missing,
                            f"missing {', '.join(map(repr, missing))} in {text!r}" if missing else ""))
    for label, limits in (("max_latency_ms", entry.max_latency_ms), ("max_wall_latency_ms", entry.max_wall_latency_ms)):
        for key, limit in limits.items():
            name = f"{label} {key}"
            measured = [
                (t.index, values[key])
                for t in turns
                if key in (values := t.latency_ms if label == "max_latency_ms" else t.wall_latency_ms)
            ]
            if not measured:
                checks.append(Check(file, name, False, f"no turn has a {key} measure"))
                continue
            over = [(i, v) for i, v in measured if v > limit]
            message = ", ".join(f"turn {i}: {v:.0f} ms" for i, v in over)
            checks.append(Check(file, name, not over, f"over {limit:.0f} ms: {message}" if over else ""))
    return checks
