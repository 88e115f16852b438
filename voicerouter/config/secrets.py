"""`${ENV_VAR}` references and redaction.

Keys live in the environment; the table holds only references. Every secret value that gets
resolved is remembered so `redact()` can scrub it from any text we print, log or raise.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping

from voicerouter.errors import MissingSecretError

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SECRET_FIELDS = frozenset({"api_key", "key", "token", "secret", "password", "authorization"})
MASK = "***"

_known_secrets: set[str] = set()
_lock = threading.Lock()


def references(value: str) -> list[str]:
    """Names of the environment variables a string refers to."""
    return REFERENCE.findall(value)


def is_reference(value: str) -> bool:
    return bool(REFERENCE.fullmatch(value.strip()))


def is_secret_field(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_FIELDS or lowered.endswith(("_key", "_token", "_secret"))


def expand(value: str, env: Mapping[str, str] | None = None, *, what: str = "value", secret: bool = False) -> str:
    """Replace `${VAR}` references; a missing variable is a `MissingSecretError` naming it."""
    env = os.environ if env is None else env

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        resolved = env.get(name)
        if resolved is None or resolved == "":
            raise MissingSecretError(
                f"environment variable {name} is not set (needed for {what})",
                hint=f"export {name}=... before starting the session",
            )
        if secret:
            remember_secret(resolved)
        return resolved

    return REFERENCE.sub(substitute, value)


def remember_secret(value: str) -> None:
    if len(value) >= 4:
        with _lock:
            _known_secrets.add(value)


def redact(text: str) -> str:
    """Scrub every secret value resolved in this process from `text`."""
    if not _known_secrets or not text:
        return text
    with _lock:
        secrets = sorted(_known_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_value(field: str, value: object) -> object:
    """How a config value is shown: references as written, literal secrets masked."""
    if isinstance(value, str) and is_secret_field(field) and not is_reference(value):
        return MASK
    return value
