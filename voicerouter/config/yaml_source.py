"""Read YAML into plain data while remembering where every value came from.

PyYAML's composer gives nodes with marks; we build the Python values ourselves so that
(1) every path (`("routes", 2, "stt")`) maps to its file:line:column for error messages and
(2) hostile input is bounded while it is parsed: file size, node count (alias bombs), nesting depth;
(3) scalars are read as the schema needs them: a date-looking word stays text, and the text of a
plain `no`/`123` is kept so a field typed as a string gets what was written.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from voicerouter.errors import ConfigError, Location

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64

PathKey = tuple[Any, ...]


class SourceMap:
    """Maps a data path to the position of its value (and of its key, for mappings).

    Built from the text on first use when the document was read by the fast path (`parse_yaml`):
    most loads never need a position, and tracking every value's costs more than the parse.
    """

    def __init__(self, file: str, text: str | None = None) -> None:
        self.file = file
        self._text = text  # parsed again, with positions, the first time one is needed
        self._values: dict[PathKey, tuple[int, int]] = {}
        self._keys: dict[PathKey, tuple[int, int]] = {}
        self._written: dict[PathKey, str] = {}  # plain scalars YAML read as bool/number/null, as written

    @property
    def values(self) -> dict[PathKey, tuple[int, int]]:
        self._fill()
        return self._values

    @property
    def keys(self) -> dict[PathKey, tuple[int, int]]:
        self._fill()
        return self._keys

    @property
    def written(self) -> dict[PathKey, str]:
        self._fill()
        return self._written

    def _fill(self) -> None:
        if self._text is not None:
            text, self._text = self._text, None
            _Builder(self).build(yaml.parse(text, Loader=_Loader))

    def locate(self, path: PathKey, *, key: bool = False) -> Location:
        """The closest known position of `path` (walking up to a parent when needed)."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while True:
            hit = table.get(probe) or self.values.get(probe)
            if hit:
                return Location(self.file, hit[0], hit[1])
            if not probe:
                return Location(self.file)
            probe = probe[:-1]


_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: same events, ~10x faster
_RESOLVER = yaml.resolver.Resolver()
_STR, _TIMESTAMP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:timestamp"
_SCALAR_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "timestamp")
)
_COLLECTION_TAGS = frozenset({None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
# Characters YAML does not allow in a document (C0 controls but tab/newline/return, DEL, C1 but NEL, surrogates).
_NOT_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@functools.lru_cache(maxsize=8192)
def _plain_tag(text: str) -> str:
    """The tag YAML gives a plain scalar (tables repeat the same words: cached)."""
    return _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))


class _Frame:
    """A mapping or sequence being built from parser events."""

    __slots__ = ("value", "path", "anchor", "log_start", "nodes", "height", "key", "has_key")

    def __init__(self, value: Any, path: PathKey, anchor: str | None, log_start: int, nodes: int) -> None:
        self.value = value
        self.path = path
        self.anchor = anchor
        self.log_start = log_start
        self.nodes = nodes  # node count when the frame opened
        self.height = 0
        self.key: Any = None
        self.has_key = False


class _Anchor:
    __slots__ = ("value", "log", "nodes", "height")

    def __init__(self, value: Any, log: list[tuple[str, PathKey, Any]], nodes: int, height: int) -> None:
        self.value, self.log, self.nodes, self.height = value, log, nodes, height


class _Builder:
    """Builds plain Python values from parser events, with no recursion: depth, size and tags are
    checked as each event arrives, so a hostile document fails early with its line and column."""

    def __init__(self, source: SourceMap) -> None:
        self.source = source
        self.count = 0
        self.stack: list[_Frame] = []
        self.anchors: dict[str, _Anchor] = {}
        self.open_anchors: list[str] = []
        self.log: list[tuple[str, PathKey, Any]] = []  # ("v"|"k"|"r", path, position or raw text), for aliases
        self.root: Any = None
        self.documents = 0

    def where(self, mark: Any) -> Location:
        return Location(self.source.file, mark.line + 1, mark.column + 1) if mark else Location(self.source.file)

    def build(self, events: Iterator[yaml.Event]) -> Any:
        handlers: dict[type, Any] = {
            yaml.ScalarEvent: self.scalar,
            yaml.MappingStartEvent: self.start,
            yaml.SequenceStartEvent: self.start,
            yaml.MappingEndEvent: self.end,
            yaml.SequenceEndEvent: self.end,
            yaml.AliasEvent: self.alias,
            yaml.DocumentStartEvent: self.document,
        }
        for event in events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)
        return self.root

    def document(self, event: yaml.DocumentStartEvent) -> None:
        self.documents += 1
        if self.documents > 1:
            raise ConfigError(
                "expected one YAML document, found another", location=self.where(event.start_mark),
                hint="remove the second `---` section",
            )

    # -- positions -------------------------------------------------------------------------
    def note(self, kind: str, path: PathKey, item: Any) -> None:
        if kind == "v":
            self.source._values.setdefault(path, item)
        elif kind == "k":
            self.source._keys[path] = item
        else:
            self.source._written[path] = item
        if self.open_anchors:  # only an anchored subtree's positions are replayed (for its aliases)
            self.log.append((kind, path, item))

    def next_path(self) -> PathKey | None:
        """Where the next value goes; None when it is a mapping key."""
        if not self.stack:
            return ()
        frame = self.stack[-1]
        if isinstance(frame.value, list):
            return frame.path + (len(frame.value),)
        if not frame.has_key:
            return None
        return frame.path + (frame.key,)

    def counted(self, mark: Any, nodes: int = 1) -> None:
        self.count += nodes
        if self.count > MAX_NODES:
            raise ConfigError(
                f"the document expands to more than {MAX_NODES} values (too large, or an alias bomb?)",
                location=self.where(mark), hint="remove the repeated anchors/aliases",
            )

    # -- events ----------------------------------------------------------------------------
    def start(self, event: yaml.CollectionStartEvent) -> None:
        self.counted(event.start_mark)
        if len(self.stack) + 1 > MAX_DEPTH:
            raise ConfigError(f"nesting deeper than {MAX_DEPTH} levels", location=self.where(event.start_mark))
        if event.tag not in _COLLECTION_TAGS:
            raise ConfigError(f"unsupported YAML tag {event.tag}", location=self.where(event.start_mark))
        path = self.next_path()
        if path is None:
            raise ConfigError("mapping keys must be plain values", location=self.where(event.start_mark))
        position = (event.start_mark.line + 1, event.start_mark.column + 1)
        log_start = len(self.log)
        if event.anchor:
            self.open_anchors.append(event.anchor)
        self.note("v", path, position)
        value: Any = {} if isinstance(event, yaml.MappingStartEvent) else []
        self.stack.append(_Frame(value, path, event.anchor, log_start, self.count - 1))

    def end(self, event: yaml.CollectionEndEvent) -> None:
        frame = self.stack.pop()
        if frame.anchor:
            self.open_anchors.remove(frame.anchor)
            log = [(kind, path[len(frame.path):], item) for kind, path, item in self.log[frame.log_start:]]
            self.anchors[frame.anchor] = _Anchor(frame.value, log, self.count - frame.nodes, frame.height + 1)
            if not self.open_anchors:
                self.log.clear()
        self.attach(frame.value, frame.height + 1)

    def attach(self, value: Any, height: int) -> None:
        if not self.stack:
            self.root = value
            return
        frame = self.stack[-1]
        if height > frame.height:
            frame.height = height
        if isinstance(frame.value, list):
            frame.value.append(value)
        else:
            frame.value[frame.key] = value
            frame.has_key = False

    def set_key(self, key: Any, mark: Any) -> None:
        frame = self.stack[-1]
        if key in frame.value:
            raise ConfigError(
                f"duplicate key {key!r}", location=self.where(mark), hint="each key may appear once in a mapping"
            )
        frame.key, frame.has_key = key, True
        self.note("k", frame.path + (key,), (mark.line + 1, mark.column + 1))

    def scalar(self, event: yaml.ScalarEvent) -> None:
        self.counted(event.start_mark)
        path = self.next_path()
        if path is None:  # a mapping key
            if event.tag == "tag:yaml.org,2002:merge" or (event.tag is None and event.value == "<<" and event.implicit[0]):
                raise ConfigError("YAML merge keys (<<) are not supported", location=self.where(event.start_mark), hint="write the keys out")
            # Keys are names (providers, flags, options): as written, unless explicitly tagged.
            key = event.value if event.tag in (None, "!", _STR) else self.construct(event)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise ConfigError("mapping keys must be plain values", location=self.where(event.start_mark))
            self.set_key(key, event.start_mark)
            return
        position = (event.start_mark.line + 1, event.start_mark.column + 1)
        self.note("v", path, position)
        written = None
        if event.tag in (None, "!") and not event.implicit[0]:
            value: Any = event.value  # quoted, or tagged `!`: a string
        elif event.tag is None:
            tag = _plain_tag(event.value)
            if tag in (_STR, _TIMESTAMP):
                value = event.value  # a date-looking word is a name here (tenant: 2024-02-30)
            else:
                value = _plain_typed(event.value)  # cached; on a failure, construct says where and why
                if value is _OUTSIDE:
                    value = self.construct(event, tag)
                written = event.value  # kept for fields the schema types as text (tenant: no)
                self.note("r", path, written)
        else:
            value = self.construct(event)
        if event.anchor:
            log: list[tuple[str, PathKey, Any]] = [("v", (), position)] + ([("r", (), written)] if written is not None else [])
            self.anchors[event.anchor] = _Anchor(value, log, 1, 0)
        self.attach(value, 0)

    def construct(self, event: yaml.ScalarEvent, tag: str | None = None) -> Any:
        tag = tag or event.tag
        if tag not in _SCALAR_TAGS:
            raise ConfigError(f"unsupported YAML tag {tag}", location=self.where(event.start_mark))
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            value = _ScalarConstructor.construct(node)
            # A date stays text (as written, once checked): every value must survive JSON output.
            return event.value if tag == _TIMESTAMP else value
        except Exception:  # PyYAML raises KeyError, AttributeError, ValueError... for bad tagged text
            short = tag.rpartition(":")[2]
            raise ConfigError(
                f"invalid YAML value: {event.value!r} is not a valid !!{short}", location=self.where(event.start_mark)
            ) from None

    def alias(self, event: yaml.AliasEvent) -> None:
        if event.anchor in self.open_anchors:
            raise ConfigError(
                f"nesting deeper than {MAX_DEPTH} levels (alias *{event.anchor} is inside its own anchor)",
                location=self.where(event.start_mark),
            )
        anchor = self.anchors.get(event.anchor)
        if anchor is None:
            raise ConfigError(f"unknown alias *{event.anchor}", location=self.where(event.start_mark))
        self.counted(event.start_mark, anchor.nodes)
        if len(self.stack) + anchor.height > MAX_DEPTH:
            raise ConfigError(f"nesting deeper than {MAX_DEPTH} levels", location=self.where(event.start_mark))
        path = self.next_path()
        if path is None:
            value = anchor.value
            if not isinstance(value, (str, int, float, bool)) and value is not None:
                raise ConfigError("mapping keys must be plain values", location=self.where(event.start_mark))
            self.set_key(value, event.start_mark)
            return
        for kind, relative, item in anchor.log:
            self.note(kind, path + relative, item)
        self.attach(copy.deepcopy(anchor.value), anchor.height)


class _ScalarConstructor(yaml.SafeLoader):
    """Reuses PyYAML's safe scalar construction (ints, bools, nulls) without building a loader per node."""

    _instance: _ScalarConstructor | None = None

    @classmethod
    def construct(cls, node: yaml.ScalarNode) -> Any:
        if cls._instance is None:
            cls._instance = cls("")
        return cls._instance.construct_object(node, deep=True)


def load_yaml(path: str | Path, *, positions: bool = False) -> tuple[Any, SourceMap]:
    """Parse one YAML file; every failure is a `ConfigError` with the file and, where known, the line.
    `positions`: record every value's position while parsing (for callers that will report on
    most files, like `validate`), instead of on first use."""
    path = Path(path)
    name = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ConfigError("file not found", location=Location(name)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", location=Location(name)) from None
    if path.is_dir():
        raise ConfigError("is a directory, not a routing table", location=Location(name))
    if size > MAX_FILE_BYTES:
        raise ConfigError(
            f"file is {size} bytes; routing tables are limited to {MAX_FILE_BYTES} bytes", location=Location(name)
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", location=Location(name)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", location=Location(name, line), hint="save the file as UTF-8"
        ) from None
    return parse_yaml(text, name, positions=positions)


def parse_yaml(text: str, name: str = "<string>", *, positions: bool = False) -> tuple[Any, SourceMap]:
    """Parse YAML text into plain values and a `SourceMap`; every failure is a located `ConfigError`."""
    source = SourceMap(name)
    bad = _NOT_PRINTABLE.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise ConfigError(
            f"control character U+{ord(bad.group()):04X} is not allowed in YAML", location=Location(name, line, column)
        )
    root = _OUTSIDE if positions else _block_values(text)
    if root is _OUTSIDE and not positions:
        root = _common_values(text)
    if root is not _OUTSIDE:
        return root, SourceMap(name, text)
    builder = _Builder(source)
    try:
        builder.build(yaml.parse(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"invalid YAML: {problem}", location=where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {' '.join(str(exc).split())}", location=Location(name)) from None
    if builder.root is None and not source.values:
        raise ConfigError("the file is empty", location=Location(name), hint="see routes.example.yaml")
    return builder.root, source


# --- the fast path --------------------------------------------------------------------------------
# Most tables are plain mappings, lists and scalars. Building those without recording positions
# (the `SourceMap` parses again when one is needed) is several times faster than `_Builder`, which
# stays the reference: anything outside that subset (anchors, aliases, tags, merge keys, a second
# document, limits reached, a YAML error) is handed to it, and it gives the value or the located error.

_OUTSIDE: Any = object()
_NO_KEY: Any = object()
_ROOT: Any = object()
_CParser: Any = getattr(getattr(yaml, "_yaml", None), "CParser", None)


# First characters of the plain scalars that YAML 1.1 may read as something other than text, and
# every implicit resolver's pattern in one (a scalar none of them matches is text).
_NOT_ONLY_TEXT = frozenset(_RESOLVER.yaml_implicit_resolvers)
_MAYBE_TYPED = re.compile(
    "|".join(dict.fromkeys(f"(?:{rx.pattern})" for rules in _RESOLVER.yaml_implicit_resolvers.values() for _, rx in rules)),
    re.X,
).match


def _plain_value(text: str) -> Any:
    """A plain scalar's value as `_Builder.scalar` reads it, or _OUTSIDE when that raises."""
    return _plain_typed(text) if text[:1] in _NOT_ONLY_TEXT and _MAYBE_TYPED(text) else text


@functools.lru_cache(maxsize=8192)
def _plain_typed(text: str) -> Any:
    tag = _plain_tag(text)
    if tag in (_STR, _TIMESTAMP):
        return text
    node = yaml.ScalarNode(tag, text)
    try:
        return _ScalarConstructor.construct(node)
    except Exception:
        return _OUTSIDE


def _common_values(text: str) -> Any:
    """The document's value when it is in the common subset, else _OUTSIDE."""
    if _CParser is None:
        return _OUTSIDE  # the pure-Python parser: no time to win, the reference builder does it all
    scalar, mapping, sequence = yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent
    mapping_end, sequence_end = yaml.MappingEndEvent, yaml.SequenceEndEvent
    typed, maybe_typed = _plain_typed, _NOT_ONLY_TEXT
    get = _CParser(text).get_event
    # The open container, and where its next value goes: a key (mapping), None (sequence), _NO_KEY
    # (the next scalar is a mapping key), _ROOT (the document itself); `saved`: the enclosing ones.
    top: Any = None
    key: Any = _ROOT
    saved: list[tuple[Any, Any]] = []
    root: Any = _OUTSIDE
    count = documents = 0
    try:
        while True:
            event = get()
            kind = event.__class__
            if kind is scalar:
                count += 1
                if event.tag is not None or event.anchor is not None or count > MAX_NODES:
                    return _OUTSIDE
                value = event.value
                if key is _NO_KEY:  # a mapping key: names stay as written
                    if value in top or (value == "<<" and event.implicit[0]):
                        return _OUTSIDE  # a duplicate or a merge key: the reference says which
                    key = value
                    continue
                if event.implicit[0] and value[:1] in maybe_typed and _MAYBE_TYPED(value):
                    value = typed(value)
                    if value is _OUTSIDE:
                        return _OUTSIDE
                if key is None:
                    top.append(value)
                elif key is _ROOT:
                    root = value
                else:
                    top[key] = value
                    key = _NO_KEY
            elif kind is mapping_end or kind is sequence_end:
                top, key = saved.pop()
            elif kind is mapping or kind is sequence:
                count += 1
                if event.tag is not None or event.anchor is not None or len(saved) >= MAX_DEPTH or count > MAX_NODES:
                    return _OUTSIDE
                value = {} if kind is mapping else []
                if key is None:
                    top.append(value)
                elif key is _NO_KEY:
                    return _OUTSIDE  # a collection as a mapping key
                elif key is _ROOT:
                    root = value
                else:
                    top[key] = value
                saved.append((top, None if key is None else _NO_KEY))
                top, key = value, (_NO_KEY if kind is mapping else None)
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    return _OUTSIDE
            elif kind is yaml.StreamEndEvent or kind is yaml.AliasEvent:
                break
    except yaml.YAMLError:
        return _OUTSIDE
    return _OUTSIDE if kind is yaml.AliasEvent or documents == 0 else root


# --- block-style tables, line by line --------------------------------------------------------------
# Big tables are written (or dumped) in block style: `key: value`, `- item`, nested by indentation.
# Reading that subset line by line costs a fraction of libyaml's events as Python objects. Anything
# else (flow collections but `[]`/`{}`, quoted keys, quotes or a `:` where they need care, comments
# after a value, anchors, tags, multi-line scalars, tabs, non-ASCII text, a second document) is
# handed to `_common_values`, the reference for this subset (a property test holds them equal).

# A plain scalar on one line: no indicator first (a `-` only before a non-space), no `: `, ` #`, a
# trailing `:` or a quote where YAML would read them otherwise.
_PLAIN_VALUE = re.compile(r"(?:[^-?:,\[\]{}#&*!|>'\"%@` ]|-[^ #])(?:[^#:'\"]|:(?=[^ ]))*").fullmatch
# One line: indent, `- ` (with the spaces after it), a `key:` (followed by a space or the end), the rest.
_LINES = re.compile(r"^( *)(- +)?(?:([A-Za-z0-9_$][A-Za-z0-9_$./+=~()-]*):(?: +(?! )|$))?(.*)$", re.M).findall
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\\\n]*\"").fullmatch


def _block_values(text: str) -> Any:
    """The document's value when it is in the block-style subset, else _OUTSIDE."""
    if not text.isascii() or "\t" in text or "\r" in text or " \n" in text or text.endswith(" "):
        return _OUTSIDE
    hash_at = text.find("#")
    while hash_at >= 0:  # comments on lines of their own only
        if text[text.rfind("\n", 0, hash_at) + 1:hash_at].strip(" "):
            return _OUTSIDE
        line_end = text.find("\n", hash_at)
        hash_at = text.find("#", line_end) if line_end >= 0 else -1
    typed, maybe_typed, maybe, plain = _plain_typed, _NOT_ONLY_TEXT, _MAYBE_TYPED, _PLAIN_VALUE
    # The open container: its column, itself, whether it is a mapping, its pending key (whose value
    # is the block on the next lines) or _NO_KEY; `saved`: the enclosing ones.
    column = top_col = -1
    top: Any = None
    top_map = True
    pending: Any = _NO_KEY
    saved: list[tuple[int, Any, bool]] = []
    count = 0
    for indent, dash, key, rest in _LINES(text):
        if not key and not dash:
            if not rest or rest[0] == "#":
                continue
            return _OUTSIDE  # a scalar on its own line: a document that is one, or a continued one
        column = len(indent)
        if pending is not _NO_KEY:  # the pending key's block starts here, or the key is null
            if column > top_col or (dash and column == top_col):
                if len(saved) >= MAX_DEPTH:
                    return _OUTSIDE
                value = [] if dash else {}
                top[pending] = value
                saved.append((top_col, top, top_map))
                top_col, top, top_map = column, value, not dash
                count += 1
            else:
                top[pending] = None
            pending = _NO_KEY
        if dash:
            while top_col > column:
                if not saved:
                    return _OUTSIDE
                top_col, top, top_map = saved.pop()
            if top is None:
                top_col, top, top_map = column, [], False
                saved.append((-1, top, False))
            if top_col != column or top_map:
                return _OUTSIDE
            if not key:  # - value
                if not plain(rest):
                    rest = _block_scalar(rest)
                    if rest is _OUTSIDE:
                        return _OUTSIDE
                elif rest[:1] in maybe_typed and maybe(rest):
                    rest = typed(rest)
                    if rest is _OUTSIDE:
                        return _OUTSIDE
                top.append(rest)
                count += 1
                continue
            if len(saved) >= MAX_DEPTH:
                return _OUTSIDE
            value = {}  # - key: ...
            top.append(value)
            saved.append((top_col, top, top_map))
            top_col, top, top_map = column + len(dash), value, True
            count += 1
        else:
            while top_col > column or (top_col == column and not top_map):
                if not saved:
                    return _OUTSIDE
                top_col, top, top_map = saved.pop()
            if top is None:
                top_col, top, top_map = column, {}, True
                saved.append((-1, top, True))
            if top_col != column:
                return _OUTSIDE
        if key in top:
            return _OUTSIDE
        count += 2
        if not rest:
            pending = key
            continue
        if not plain(rest):
            rest = _block_scalar(rest)
            if rest is _OUTSIDE:
                return _OUTSIDE
        elif rest[:1] in maybe_typed and maybe(rest):
            rest = typed(rest)
            if rest is _OUTSIDE:
                return _OUTSIDE
        top[key] = rest
    if top is None or count > MAX_NODES:
        return _OUTSIDE
    if pending is not _NO_KEY:
        top[pending] = None
    return saved[0][1] if saved else top


def _block_scalar(text: str) -> Any:
    """A value that is not a plain scalar: a simple quoted one, `[]` or `{}`; else _OUTSIDE."""
    if _QUOTED(text):
        return text[1:-1]
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return _OUTSIDE
