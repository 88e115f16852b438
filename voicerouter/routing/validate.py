"""`validate`: every finding for one or more routing-table files, and their renderings (text, json, github)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from voicerouter.errors import ConfigError
from voicerouter.routing.findings import Finding, matches


@dataclass
class ValidationReport:
    files: list[str]
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def infos(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "info"]

    @property
    def valid(self) -> bool:
        return not self.errors


def validate_file(
    path: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    strict: bool = False,
    select: Sequence[str] = (),
    ignore: Sequence[str] = (),
) -> list[Finding]:
    """All findings for one file, sorted by position.

    `select`/`ignore` keep or drop findings by rule id, id prefix or name (like ruff's); with
    `strict`, warnings count as errors (info findings, such as unset variables, never do).
    """
    return filter_findings(raw_findings(path, env=env), strict=strict, select=select, ignore=ignore)


def raw_findings(path: str | Path, *, env: Mapping[str, str] | None = None) -> list[Finding]:
    """Every finding for one file, unfiltered, sorted by position (what the CLI caches)."""
    # Imported here: `validate` on a cached file needs neither YAML nor the pydantic schema.
    from voicerouter.config.loader import build_table
    from voicerouter.config.yaml_source import load_yaml

    try:
        data, source = load_yaml(path, positions=True)
    except ConfigError as exc:
        from voicerouter.errors import Location

        findings = [Finding("error", "unreadable", exc.message + (f" ({exc.hint})" if exc.hint else ""), exc.location or Location(str(path)))]
    else:
        _, findings = build_table(data, source, env=os.environ if env is None else env)
    return sorted(findings, key=lambda f: (f.location.line or 0, f.location.column or 0))


def filter_findings(
    findings: Sequence[Finding], *, strict: bool = False, select: Sequence[str] = (), ignore: Sequence[str] = ()
) -> list[Finding]:
    out = [f for f in findings if (not select or matches(f, select)) and not matches(f, ignore)]
    if strict:
        out = [Finding("error", f.code, f.message, f.location) if f.severity == "warning" else f for f in out]
    return out


def validate_files(
    paths: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    strict: bool = False,
    select: Sequence[str] = (),
    ignore: Sequence[str] = (),
) -> ValidationReport:
    report = ValidationReport([str(p) for p in paths])
    for path in paths:
        report.findings += validate_file(path, env=env, strict=strict, select=select, ignore=ignore)
    return report


def render_text(report: ValidationReport) -> str:
    lines = [str(f) for f in report.findings]
    lines.append(summary(report))
    return "\n".join(lines)


def summary(report: ValidationReport) -> str:
    verdict = "valid" if report.valid else "invalid"
    notes = f", {len(report.infos)} note(s)" if report.infos else ""
    return f"{len(report.files)} file(s) {verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s){notes}"


def render_json(report: ValidationReport) -> str:
    return json.dumps(
        {
            "ok": report.valid,
            "valid": report.valid,
            "files": report.files,
            "errors": len(report.errors),
            "warnings": len(report.warnings),
            "infos": len(report.infos),
            "findings": [f.to_dict() for f in report.findings],
        },
        indent=2,
    )


def _gh_escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def render_github(report: ValidationReport) -> str:
    """GitHub Actions workflow commands: one ::error/::warning annotation per finding."""
    lines = []
    for f in report.findings:
        props = [f"file={_gh_escape(f.location.file, prop=True)}"]
        if f.location.line:
            props.append(f"line={f.location.line}")
        if f.location.column:
            props.append(f"col={f.location.column}")
        props.append(f"title={_gh_escape(f'voicerouter {f.rule_id} {f.code}', prop=True)}")
        level = "notice" if f.severity == "info" else f.severity
        lines.append(f"::{level} {','.join(props)}::{_gh_escape(f.message)}")
    return "\n".join(lines)
