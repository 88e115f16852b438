"""`${ENV_VAR}` references and redaction.

Keys live in the environment; the table holds only references. Every secret value that gets
resolved is remembered so `redact()` can scrub it from any text we print, log or raise.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from voicerouter.errors import MissingSecretError

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
BARE_REFERENCE = re.compile(r"(?<![\\$])\$([A-Z_][A-Z0-9_]*)\b")  # $VAR (capitals, as env vars are), not ${VAR}
SECRET_FIELDS = frozenset({"api_key", "key", "token", "secret", "password", "authorization"})
MASK = "***"
MIN_SECRET = 4  # shorter values are not remembered (they would mask ordinary words)
PREFIX_MIN = 8  # a cut-off piece of a secret this long is still masked

_known_secrets: set[str] = set()
_forms: list[str] = []  # every form of every known secret, longest first (rebuilt when a secret is added)
_PERCENT = re.compile(r"%[0-9A-F]{2}")
_URLSAFE = str.maketrans("+/", "-_")
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
    """Make `value` (and every form of it, see `secret_forms`) redactable from now on."""
    if len(value) >= MIN_SECRET:
        with _lock:
            if value not in _known_secrets:
                _known_secrets.add(value)
                _forms.clear()


def remember_url_credentials(url: str) -> None:
    """A URL's `user:password` (as written and decoded) and its password become secrets."""
    from urllib.parse import unquote

    scheme, sep, rest = url.partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if not sep or "@" not in authority:
        return
    userinfo = authority.rpartition("@")[0]
    for text in {userinfo, unquote(userinfo)}:
        remember_secret(text)  # the Basic pair (its base64 is what goes on the wire)
        user, colon, password = text.partition(":")
        remember_secret(password if colon else user)


def secret_forms(secret: str) -> set[str]:
    """The strings a secret can turn into on the wire and in logs.

    Raw, JSON-escaped, URL-encoded (either case of hex escapes, `+` for spaces), hex, and base64
    (standard and URL-safe, padded or not). Base64 is done at all three byte alignments (the secret
    encoded on its own, or after one or two other bytes, as in `user:PASS` Basic pairs or
    `key=...` bodies): the whole 3-byte groups inside the secret encode the same way wherever it sits.
    """
    raw = secret.encode("utf-8")
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], raw.hex(), raw.hex().upper()}
    for quoted in (quote(secret, safe=""), quote(secret), quote_plus(secret)):
        forms.add(quoted)
        forms.add(_PERCENT.sub(lambda m: m.group(0).lower(), quoted))
    whole = base64.b64encode(raw).decode("ascii")
    forms |= {whole, whole.translate(_URLSAFE)}  # the exact encoding, tail and padding included
    for shift in (0, 1, 2):
        core = raw[shift:]
        core = core[: len(core) // 3 * 3]
        if len(core) >= 6:  # shorter cores are too common to mask
            encoded = base64.b64encode(core).decode("ascii")
            forms.add(encoded)
            forms.add(encoded.translate(_URLSAFE))
    return {form for form in forms if len(form) >= MIN_SECRET}


def redact(text: str) -> str:
    """Scrub every secret resolved in this process from `text`, in every form `secret_forms` lists.

    A leading piece of any form at least `PREFIX_MIN` characters long is masked too, so a secret
    that something else cut short (`key=sk-abcdef...`) still leaves nothing behind.
    """
    if not _known_secrets or not text:
        return text
    forms = _all_forms()
    spans: list[tuple[int, int]] = []
    for form in forms:
        head = form[:PREFIX_MIN]
        start = text.find(head)
        while start != -1:
            end, k = start + len(head), len(head)
            while k < len(form) and end < len(text) and text[end] == form[k]:
                end, k = end + 1, k + 1
            spans.append((start, end))
            start = text.find(head, start + 1)
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    position = 0
    for start, end in spans:
        if end <= position:
            continue
        out.append(text[position:max(start, position)])
        if start >= position:
            out.append(MASK)
        position = end
    out.append(text[position:])
    return "".join(out)


def install_log_redaction() -> None:
    """Redact every log record of the process (ours, httpx's, websockets'...) as it is made, so no
    handler (console, file, a server's log shipper) ever sees a secret. Idempotent."""
    import logging

    current = logging.getLogRecordFactory()
    if getattr(current, "voicerouter_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        if _known_secrets:
            try:
                message = record.getMessage()
            except Exception:  # a malformed format string: logging reports it later as usual
                return record
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return record

    factory.voicerouter_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def redact_value(value: Any) -> Any:
    """`redact` applied to every string inside a JSON-like value (dict keys included)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


def _all_forms() -> list[str]:
    with _lock:
        if not _forms:
            every: set[str] = set()
            for secret in _known_secrets:
                every |= secret_forms(secret)
            _forms.extend(sorted(every, key=len, reverse=True))
        return list(_forms)


def mask_value(field: str, value: object) -> object:
    """How a config value is shown: references as written, literal secrets masked, URL credentials masked."""
    if isinstance(value, str) and is_secret_field(field) and not is_reference(value):
        return MASK
    if isinstance(value, str) and "://" in value and "@" in value:
        from voicerouter.netaddr import without_credentials

        return without_credentials(value)
    if isinstance(value, dict):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_value(field, v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # vendor options may hold .nan; JSON output must stay JSON
    return value
