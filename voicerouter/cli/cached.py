"""The bodies of the hot commands, `validate` and `resolve`, with a cache keyed by the file's hash.

Both run in CI loops, editors and scripts, and checking a table with the pydantic schema costs far
more than Python's own start. What they print depends only on the file's bytes, this version of
the code, the arguments and (for `validate`) which referenced `${VAR}`s are set, so the result is
kept under `$VOICEROUTER_CACHE_DIR` (default `$XDG_CACHE_HOME/voicerouter`, `~/.cache/voicerouter`).
On a hit nothing heavy is imported: no typer, pydantic or YAML, and no rich in a pipe.
`VOICEROUTER_NO_CACHE=1` turns it off. A `resolve` whose plan has a sticky split is cached only
for a given `--session-id` (the split's pick depends on it).
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

from voicerouter import __version__
from voicerouter.errors import EXIT_FAILED, EXIT_OK, Location
from voicerouter.routing.findings import Finding

CACHE_FORMAT = 1
REFERENCE = re.compile(rb"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PACKAGE = Path(__file__).resolve().parent.parent
# The code a cached answer depends on: a change to any of it (an edit, an upgrade) is a miss.
_CODE = ("config", "routing", "providers/registry.py", "cli/cached.py", "cli/render_plan.py", "netaddr.py", "errors.py")


def cache_dir() -> Path | None:
    if os.environ.get("VOICEROUTER_NO_CACHE"):
        return None
    if os.environ.get("VOICEROUTER_CACHE_DIR"):
        return Path(os.environ["VOICEROUTER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "voicerouter"


def _code_stamp() -> str:
    stamps = [__version__, str(CACHE_FORMAT), sys.version.split()[0]]
    for name in _CODE:
        path = _PACKAGE / name
        entries = sorted(path.glob("*.py")) + sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        stamps += [f"{p.name}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in entries if p.exists()]
    return "|".join(stamps)


def _key(kind: str, content: bytes, *parts: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    for piece in (kind, _code_stamp(), *parts):
        digest.update(piece.encode() + b"\0")
    digest.update(content)
    return digest.hexdigest()


def _load(key: str) -> Any:
    folder = cache_dir()
    if folder is None:
        return None
    try:
        return json.loads((folder / f"{key}.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _store(key: str, value: Any) -> None:
    folder = cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(value), "utf-8")
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        pass  # a read-only home is no reason to fail


# --- validate -------------------------------------------------------------------------------------


def findings_for(path: Path) -> list[Finding]:
    """The unfiltered findings of one file: from the cache, or checked (and then cached)."""
    try:
        content = path.read_bytes() if cache_dir() is not None else None
    except OSError:
        content = None
    if content is not None:
        env_state = ",".join(f"{v.decode()}={bool(os.environ.get(v.decode()))}" for v in sorted(set(REFERENCE.findall(content))))
        key = _key("validate", content, str(path), env_state)
        hit = _load(key)
        if hit is not None:
            return [Finding(f["severity"], f["code"], f["message"], Location(f["file"], f["line"], f["column"])) for f in hit]
    from voicerouter.routing.validate import raw_findings

    findings = raw_findings(path)
    if content is not None:
        _store(key, [f.to_dict() for f in findings])
    return findings


def run_validate(files: list[Path], *, fmt: str, strict: bool, select: list[str], ignore: list[str], quiet: bool = False) -> int:
    from voicerouter.cli.common import stdout_is_terminal
    from voicerouter.routing.findings import check_selectors
    from voicerouter.routing.validate import ValidationReport, filter_findings, render_github, render_json

    chosen, dropped = check_selectors(select, "--select"), check_selectors(ignore, "--ignore")
    report = ValidationReport([str(p) for p in files])
    for path in files:
        report.findings += filter_findings(findings_for(Path(path)), strict=strict, select=chosen, ignore=dropped)
    if fmt == "json":
        print(render_json(report))
    elif fmt == "github":
        out = render_github(report)
        if out:
            print(out)
    elif stdout_is_terminal():
        from voicerouter.cli.validate import render_text

        render_text(report)
    else:
        from voicerouter.routing.validate import summary

        lines = [str(f) for f in report.findings] + ([] if quiet else [summary(report)])
        sys.stdout.write("".join(line + "\n" for line in lines))
    return EXIT_OK if report.valid else EXIT_FAILED


# --- resolve --------------------------------------------------------------------------------------


def plan_for(path: Path, *, tenant: str | None, region: str | None, flags: dict[str, bool],
             session_id: str | None) -> tuple[dict[str, Any], set[str], str]:
    """(the plan as JSON data, the flags the table's routes use, the table's file name)."""
    key = None
    try:
        content = path.read_bytes() if cache_dir() is not None else None
    except OSError:
        content = None  # reading the table again says what is wrong, with its location
    if content is not None:
        flag_text = ",".join(f"{k}={v}" for k, v in sorted(flags.items()))
        key = _key("resolve", content, str(path), tenant or "\0", region or "\0", flag_text, session_id or "\0")
    hit = _load(key) if key is not None else None
    if hit is None or (hit["split"] and session_id is None):
        hit = _resolve(path, tenant=tenant, region=region, flags=flags, session_id=session_id)
        if key is not None and (session_id is not None or not hit["split"]):
            _store(key, hit)
    data = hit["plan"]
    if session_id is None and not hit["split"]:
        data["session_id"] = uuid.uuid4().hex[:16]  # a fresh id, as RouteContext gives; it changes nothing here
    return data, set(hit["route_flags"]), hit["file"]


def _resolve(path: Path, *, tenant: str | None, region: str | None, flags: dict[str, bool],
             session_id: str | None) -> dict[str, Any]:
    from voicerouter.config.yaml_source import load_yaml
    from voicerouter.routing.plan import RouteContext
    from voicerouter.routing.quick import quick_plan

    kwargs = {"session_id": session_id} if session_id else {}
    ctx = RouteContext(tenant=tenant, region=region, flags=flags, **kwargs)
    data, _ = load_yaml(path)
    quick = quick_plan(data, ctx, os.environ)  # a plain table: no pydantic schema to import
    if quick is not None:
        plan_data, route_flags, split = quick
        return {"plan": plan_data, "split": split, "route_flags": sorted(route_flags), "file": str(path)}
    from voicerouter.config.loader import resolve_file

    plan, route_flags = resolve_file(path, ctx, data=data)
    split = any(stage.strategy == "split" for stage in plan.stages() + plan.carrier_stages())
    return {"plan": plan.to_dict(), "split": split, "route_flags": sorted(route_flags), "file": str(path)}


def run_resolve(routes: Path | None, *, tenant: str | None, region: str | None, flag: list[str],
                session_id: str | None, json_out: bool) -> int:
    from voicerouter.cli.common import find_routes, parse_flags, warn_unused_flags

    flags = parse_flags(flag)
    data, used_flags, file = plan_for(find_routes(routes), tenant=tenant, region=region, flags=flags,
                                      session_id=session_id)
    if json_out:
        print(json.dumps(data, indent=2))
    else:
        from voicerouter.cli.render_plan import render_plan

        render_plan(data, file)
    warn_unused_flags(used_flags, flags, file)
    for warning in data["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK
