"""Read YAML into plain data while remembering where every value came from.

PyYAML's composer gives nodes with marks; we build the Python values ourselves so that
(1) every path (`("routes", 2, "stt")`) maps to its file:line:column for error messages and
(2) hostile input is bounded: file size, node count (alias bombs) and nesting depth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from voicerouter.errors import ConfigError, Location

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64

PathKey = tuple[Any, ...]


@dataclass
class SourceMap:
    """Maps a data path to the position of its value (and of its key, for mappings)."""

    file: str
    values: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    keys: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

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


class _Builder:
    def __init__(self, source: SourceMap) -> None:
        self.source = source
        self.count = 0

    def build(self, node: yaml.Node, path: PathKey, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise ConfigError(
                f"the document expands to more than {MAX_NODES} values (an alias bomb?)",
                location=self.source.locate(path),
                hint="remove the repeated anchors/aliases",
            )
        if depth > MAX_DEPTH:
            raise ConfigError(f"nesting deeper than {MAX_DEPTH} levels", location=self.source.locate(path))
        self.source.values.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise ConfigError(
                        "YAML merge keys (<<) are not supported",
                        location=Location(self.source.file, key_node.start_mark.line + 1),
                        hint="write the keys out",
                    )
                key = self.build(key_node, path + ("<key>",), depth + 1)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise ConfigError(
                        "mapping keys must be plain values",
                        location=Location(self.source.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                    )
                if key in result:
                    raise ConfigError(
                        f"duplicate key {key!r}",
                        location=Location(self.source.file, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                        hint="each key may appear once in a mapping",
                    )
                child = path + (key,)
                self.source.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                result[key] = self.build(value_node, child, depth + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return _ScalarConstructor.construct(node)


class _ScalarConstructor(yaml.SafeLoader):
    """Reuses PyYAML's safe scalar resolution (ints, bools, nulls) without building a loader per node."""

    _instance: _ScalarConstructor | None = None

    @classmethod
    def construct(cls, node: yaml.ScalarNode) -> Any:
        if cls._instance is None:
            cls._instance = cls("")
        return cls._instance.construct_object(node, deep=True)


def load_yaml(path: str | Path) -> tuple[Any, SourceMap]:
    """Parse one YAML file; every failure is a `ConfigError` with the file and, where known, the line."""
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
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str = "<string>") -> tuple[Any, SourceMap]:
    source = SourceMap(name)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"invalid YAML: {problem}", location=where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", location=Location(name)) from None
    if node is None:
        raise ConfigError("the file is empty", location=Location(name), hint="see routes.example.yaml")
    try:
        data = _Builder(source).build(node, (), 0)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name)
        raise ConfigError(f"invalid YAML value: {exc.problem}", location=where) from None
    except RecursionError:
        raise ConfigError("the document is nested too deeply", location=Location(name)) from None
    return data, source
