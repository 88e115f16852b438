"""A validation finding: what is wrong, how bad, and where (file:line:column), under a stable rule.

Every finding names a rule, like ruff's `E501 line-too-long`: a stable id (`VR205`) and a name
(`unknown-provider`). `voicerouter validate --select/--ignore` take ids, id prefixes (`VR4`) or
names. To add a check: add one `Rule` to `RULES` (next free id in its group), emit it with
`Finding(severity, name, ...)`, and document it in the README's table of finding codes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from voicerouter.errors import ConfigError, Location, UsageError, printable

# error: the table is unusable; warning: probably a mistake (`--strict` fails on it);
# info: about this machine rather than the table (an unset variable in CI), never a failure.
Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    summary: str


# Groups: VR0 file, VR1 schema, VR2 providers and stages, VR3 routes and numbers, VR4 URLs and
# secrets, VR5 the environment.
RULES: tuple[Rule, ...] = (
    Rule("VR001", "unreadable", "the file cannot be read or parsed as YAML (or is hostile: too big, alias bombs)"),
    Rule("VR002", "not-a-mapping", "the document is not a mapping"),
    Rule("VR101", "unknown-key", "a key the schema does not know (with a did-you-mean)"),
    Rule("VR102", "missing-key", "a required key is missing"),
    Rule("VR103", "bad-stage", "a stage is not a name, a list, a split or a strategy"),
    Rule("VR104", "schema", "a value of the wrong type or out of range (NaN and infinities included)"),
    Rule("VR201", "unknown-type", "a provider type no installed package registers (with a did-you-mean)"),
    Rule("VR202", "wrong-kind", "a provider of the wrong kind for its stage, or a kind its type lacks"),
    Rule("VR203", "missing-kind", "a provider type offers several kinds and none is set"),
    Rule("VR204", "missing-option", "a required option (api_key, region, url, model) is missing"),
    Rule("VR205", "unknown-provider", "a stage names a provider that is not defined (with a did-you-mean)"),
    Rule("VR206", "duplicate-provider", "a stage lists the same provider twice"),
    Rule("VR207", "empty-chain", "a stage lists no provider"),
    Rule("VR208", "bad-weight", "a split weight that is not a positive number"),
    Rule("VR209", "missing-stage", "the pipeline lacks a stage it needs (stt and tts, or s2s)"),
    Rule("VR210", "unused-provider", "a provider no route and no default uses (warning)"),
    Rule("VR301", "duplicate-route", "two routes share a name"),
    Rule("VR302", "shadowed-route", "an earlier route matches every session this one would: it can never match"),
    Rule("VR303", "bad-number", "a numbers: entry that is not an E.164 number or glob"),
    Rule("VR304", "shadowed-number", "an earlier numbers: entry covers this one (warning)"),
    Rule("VR401", "bad-url", "a URL that is not http(s)/ws(s) or does not parse"),
    Rule("VR402", "insecure-url", "plain http/ws to a host that is not loopback"),
    Rule("VR403", "credentials-in-url", "a credential written into a URL instead of a ${VAR} reference"),
    Rule("VR404", "literal-secret", "a secret field holding a literal value instead of ${VAR} (warning)"),
    Rule("VR405", "bare-env-ref", "$VAR without braces: written as text, not a reference; write ${VAR}"),
    Rule("VR501", "unset-env", "a referenced environment variable is not set here (info; never fails, not even --strict)"),
)
BY_NAME = {rule.name: rule for rule in RULES}
UNREGISTERED = "VR999"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str  # the rule's stable name, e.g. "unknown-provider"
    message: str
    location: Location

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", printable(self.message))

    @property
    def rule_id(self) -> str:
        rule = BY_NAME.get(self.code)
        return rule.id if rule else UNREGISTERED

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "severity": self.severity,
            "id": self.rule_id,
            "code": self.code,
            "message": self.message,
        }

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message} [{self.rule_id} {self.code}]"


def matches(finding: Finding, selectors: Iterable[str]) -> bool:
    """Whether a rule id, id prefix (`VR4`, `VR`) or rule name among `selectors` covers the finding."""
    rule_id = finding.rule_id
    return any(finding.code == s or rule_id.startswith(s.upper()) for s in selectors)


def check_selectors(selectors: Iterable[str], option: str) -> list[str]:
    """The selectors, each checked to name at least one rule (else a usage error with a suggestion)."""
    out = []
    for raw in selectors:
        for selector in filter(None, (s.strip() for s in raw.split(","))):
            if selector not in BY_NAME and not any(r.id.startswith(selector.upper()) for r in RULES):
                from voicerouter.suggest import did_you_mean

                candidates = [r.name for r in RULES] + [r.id for r in RULES]
                raise UsageError(
                    f"{option} {selector!r} names no rule{did_you_mean(selector, candidates)}",
                    hint="rules are listed in the README (Finding codes); ids (VR205), prefixes (VR2) or names (unknown-provider)",
                )
            out.append(selector)
    return out


class RoutingTableInvalid(ConfigError):
    """Raised by `load_routes` when the table has errors; carries every finding."""

    def __init__(self, findings: list[Finding]) -> None:
        errors = [f for f in findings if f.severity == "error"]
        first = errors[0] if errors else findings[0]
        more = f" (and {len(errors) - 1} more; run `voicerouter validate` for all)" if len(errors) > 1 else ""
        super().__init__(f"{first.message} [{first.rule_id} {first.code}]{more}", location=first.location)
        self.findings = findings
