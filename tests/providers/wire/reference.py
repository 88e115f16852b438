"""What of a captured request must match between an official SDK and voicerouter's client.

A reference keeps the method, the path (vendor ids as `{placeholders}`), whether it is a WebSocket,
the auth header and its scheme, the body kind, the body's and query's field names, the first
WebSocket message type, and pinned version headers. The SDK's plain call sends only what the API
requires plus its own defaults, so its fields are what a client must send at least.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from wire.capture import AUTH_HEADERS, Captured

REFERENCES = Path(__file__).with_name("references.json")
PINNED_HEADERS = ("cartesia-version", "openai-beta", "assemblyai-version")


def summarize(record: Captured, key: str, placeholders: dict[str, str] | None = None) -> dict[str, Any]:
    path = record.path
    for name, value in (placeholders or {}).items():
        path = path.replace(value, "{" + name + "}")
    header, scheme = None, None
    for name in AUTH_HEADERS:
        value = record.headers.get(name)
        if value and key in value:
            header, scheme = name, value.replace(key, "").strip()
            break
    content_type = record.headers.get("content-type", "")
    fields: list[str] = []
    if record.websocket:
        kind = "websocket"
        first_json = next((m for m in record.messages if isinstance(m, dict)), None)
        if first_json is not None and "type" not in first_json:  # untyped protocols: its fields matter
            fields = sorted(k for k, v in first_json.items() if v is not None)
    elif not record.body:
        kind = "none"
    elif content_type.startswith("application/json"):
        kind, fields = "json", sorted(k for k, v in json.loads(record.body).items() if v is not None)
    elif content_type.startswith("multipart/form-data"):
        kind, fields = "multipart", _form_fields(record.body)
    else:
        kind = "binary"
    first = record.messages[0] if record.messages else None
    if isinstance(first, dict):
        first_message = first.get("type") or (next(iter(first)) if len(first) == 1 else "json")
    elif first is None:
        first_message = None
    else:
        first_message = "binary"
    return {
        "method": record.method, "path": path, "body": kind, "fields": fields,
        "query": sorted(record.query), "auth": {"header": header, "scheme": scheme},
        "first_message": first_message,
        "pinned": {h: record.headers[h] for h in PINNED_HEADERS if h in record.headers},
    }


def _form_fields(body: bytes) -> list[str]:
    """Names of the multipart parts that carry a value (SDKs send some unset options as `null`)."""
    names = set()
    for part in re.finditer(rb'Content-Disposition: form-data; name="([^"]+)"[^\r]*\r\n(?:[^\r]+\r\n)*\r\n(.{0,5})', body,
                            re.DOTALL):
        if not part.group(2).startswith(b"null\r"):
            names.add(part.group(1).decode())
    return sorted(names)


def mismatches(client: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """How the client's request differs from the SDK's where it must not (empty when it matches)."""
    problems = []
    for field in ("method", "path", "body", "auth", "first_message"):
        if client[field] != reference[field]:
            problems.append(f"{field}: client {client[field]!r}, SDK {reference[field]!r}")
    for field in ("fields", "query"):
        missing = sorted(set(reference[field]) - set(client[field]))
        if missing:
            problems.append(f"{field}: the SDK sends {missing} and the client does not")
    for header, value in reference["pinned"].items():
        if client["pinned"].get(header) != value:
            problems.append(f"header {header}: client {client['pinned'].get(header)!r}, SDK {value!r}")
    return problems


def load() -> dict[str, Any]:
    return json.loads(REFERENCES.read_text())
