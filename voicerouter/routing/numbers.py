"""The routing context of a phone call: which tenant, region and flags a called number stands for.

The table's `numbers:` maps E.164 numbers and globs (`+4420*`) to a context; the first entry in
file order that matches the called number wins. Values the call itself carries (Twilio
`<Parameter>`s, query parameters) override the number's. A number that maps to nothing gives an
empty context, so the table's defaults apply with the usual warning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from voicerouter.config.schema import NumberConfig
from voicerouter.routing.plan import RouteContext

E164_PATTERN = re.compile(r"^\+[0-9*?\[\]\-]{1,20}$")
_GLOB = re.compile(r"[*?\[]")


def normalize(number: str) -> str:
    """`+1 (555) 123-0000` -> `+15551230000`; a number without `+` is kept as digits."""
    text = number.strip()
    digits = re.sub(r"[^0-9]", "", text)
    return f"+{digits}" if text.startswith("+") else digits


@dataclass(frozen=True)
class CallContext:
    """A call's routing context and where each part of it came from."""

    tenant: str | None = None
    region: str | None = None
    flags: dict[str, bool] = field(default_factory=dict)
    number: str | None = None
    pattern: str | None = None  # the `numbers:` entry that matched, if any
    overridden: tuple[str, ...] = ()  # keys the call's own parameters set

    def route_context(self, session_id: str | None = None) -> RouteContext:
        kwargs = {"session_id": session_id} if session_id else {}
        return RouteContext(tenant=self.tenant, region=self.region, flags=dict(self.flags), **kwargs)

    def explain(self) -> str:
        parts = []
        if self.number is not None:
            parts.append(f"number {self.number} " + (f"matched numbers[{self.pattern!r}]" if self.pattern
                                                      else "is not in numbers: (defaults apply unless a route matches)"))
        if self.overridden:
            parts.append("set by the call: " + ", ".join(self.overridden))
        return "; ".join(parts)


def match_number(numbers: Mapping[str, NumberConfig], number: str) -> tuple[str, NumberConfig] | None:
    wanted = normalize(number)
    for pattern, config in numbers.items():
        target = normalize(pattern) if not _GLOB.search(pattern) else pattern
        if (wanted == target) if not _GLOB.search(pattern) else fnmatchcase(wanted, pattern):
            return pattern, config
    return None


def call_context(
    numbers: Mapping[str, NumberConfig],
    to: str | None,
    *,
    tenant: str | None = None,
    region: str | None = None,
    flags: Mapping[str, bool] | None = None,
) -> CallContext:
    """The context of a call to `to`, with explicit values (the call's parameters) taking precedence."""
    found = match_number(numbers, to) if to else None
    base = found[1] if found else NumberConfig()
    overridden = tuple(k for k, v in (("tenant", tenant), ("region", region)) if v) + tuple(
        f"flag {k}" for k in (flags or {})
    )
    return CallContext(
        tenant=tenant or base.tenant,
        region=region or base.region,
        flags={**base.flags, **(flags or {})},
        number=normalize(to) if to else None,
        pattern=found[0] if found else None,
        overridden=overridden,
    )


def parse_flag_params(values: list[str]) -> dict[str, bool]:
    """`beta`, `beta=true`, `s2s=false` (query parameters, call parameters) -> flags."""
    flags: dict[str, bool] = {}
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            name, _, setting = item.partition("=")
            flags[name.strip()] = setting.strip().lower() not in ("false", "0", "no", "off") if setting else True
    return flags
