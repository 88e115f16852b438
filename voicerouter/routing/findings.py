"""A validation finding: what is wrong, how bad, and where (file:line:column)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from voicerouter.errors import ConfigError, Location, printable

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str  # stable identifier, e.g. "unknown-provider"
    message: str
    location: Location

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", printable(self.message))

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        }

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message} [{self.code}]"


class RoutingTableInvalid(ConfigError):
    """Raised by `load_routes` when the table has errors; carries every finding."""

    def __init__(self, findings: list[Finding]) -> None:
        errors = [f for f in findings if f.severity == "error"]
        first = errors[0] if errors else findings[0]
        more = f" (and {len(errors) - 1} more; run `voicerouter validate` for all)" if len(errors) > 1 else ""
        super().__init__(f"{first.message} [{first.code}]{more}", location=first.location)
        self.findings = findings
