"""Reading JSONL event logs back, and a logger that stamps every line with the route context.

Logs are written while sessions run and may be cut short or hand-edited, so the reader either
stops at the first bad line with its file:line, or skips bad lines and counts them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicerouter.config.secrets import redact
from voicerouter.errors import Location, VoiceRouterError

LOG_SUFFIX = ".jsonl"
CONTEXT_KEYS = ("session_id", "tenant", "region", "route")


class EventLogError(VoiceRouterError):
    """An event log that cannot be read; names the file and line."""

    def __init__(self, message: str, *, location: Location | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.location = location

    def __str__(self) -> str:
        text = super().__str__()
        return f"{self.location}: {text}" if self.location else text


@dataclass(frozen=True)
class SkippedLine:
    location: Location
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


@dataclass
class EventLog:
    """Events read from one or more files, in file order, plus what had to be skipped."""

    events: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    skipped: list[SkippedLine] = field(default_factory=list)
    session_files: dict[str, Path] = field(default_factory=dict)  # session id -> log it came from

    def sessions(self) -> list[str]:
        """Session ids in order of first appearance."""
        return list(dict.fromkeys(e["session_id"] for e in self.events))


def _check_line(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse one line; returns (event, None) or (None, why it is bad)."""
    try:
        obj = json.loads(raw.rstrip("\r\n"))
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg}, column {exc.colno})"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    for key in ("type", "session_id"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            return None, f"missing or non-string {key!r}"
    t = obj.get("t")
    if not isinstance(t, int | float) or isinstance(t, bool):
        return None, "missing or non-numeric 't' (session clock)"
    return obj, None


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; a directory stands for every *.jsonl below it (replay --out DIR)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(path.rglob(f"*{LOG_SUFFIX}"))
            if not found:
                raise EventLogError(f"no {LOG_SUFFIX} event logs in directory {path}")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise EventLogError(
                f"no such event log: {path}", hint="pass the events.jsonl written by `replay --out` or `run`"
            )
    return out


def read_events(paths: Iterable[str | Path], *, strict: bool = False) -> EventLog:
    """Read event logs. strict: raise EventLogError at the first bad line; else skip and record it."""
    log = EventLog()
    for path in expand_paths(paths):
        log.files.append(path)
        try:
            handle = path.open(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise EventLogError(f"cannot read event log {path}: {exc.strerror}") from exc
        with handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                event, problem = _check_line(raw)
                if event is None:
                    where = Location(str(path), number)
                    if strict:
                        raise EventLogError(
                            f"bad event line: {problem}",
                            location=where,
                            hint="fix or delete the line, or drop --strict",
                        )
                    log.skipped.append(SkippedLine(where, problem or "bad line"))
                    continue
                log.events.append(event)
                log.session_files.setdefault(event["session_id"], path)
    return log


def context_of(source: Any) -> dict[str, str]:
    """Route context from an EventBus, RouteContext, SessionPlan, Event, or a mapping."""
    if isinstance(source, Mapping):
        values = {k: source.get(k) for k in CONTEXT_KEYS}
    else:
        ctx = getattr(source, "context", None)  # SessionPlan carries a RouteContext
        values = {k: getattr(source, k, None) for k in CONTEXT_KEYS}
        if ctx is not None:
            for key in ("session_id", "tenant", "region"):
                values[key] = values[key] or getattr(ctx, key, None)
    return {k: str(v) for k, v in values.items() if v not in (None, "")}


def format_context(context: Mapping[str, str]) -> str:
    names = {"session_id": "session"}
    return " ".join(f"{names.get(k, k)}={context[k]}" for k in CONTEXT_KEYS if k in context)


class RouteLoggerAdapter(logging.LoggerAdapter):
    """Prefixes every message with `[session=.. tenant=.. region=.. route=..]` and redacts secrets.

    The context also lands in the record's `extra` (record.route etc.) for structured handlers.
    """

    def __init__(self, logger: logging.Logger, context: Mapping[str, str]) -> None:
        super().__init__(logger, dict(context))
        self.prefix = f"[{format_context(context)}] " if context else ""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return f"{self.prefix}{msg}", kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        # Format here so secrets inside the arguments are redacted too.
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            super().log(level, redact(text), **kwargs)


def route_logger(source: Any, name: str = "voicerouter") -> RouteLoggerAdapter:
    """A logger whose lines carry the route context of `source` (bus, plan, route context, event)."""
    return RouteLoggerAdapter(logging.getLogger(name), context_of(source))
