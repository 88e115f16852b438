"""Address facts needed both by table validation (light) and HTTP clients."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for localhost names and 127.0.0.0/8 / ::1 (where plain http/ws is acceptable)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
