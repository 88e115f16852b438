"""Addresses: the one URL parser that table validation and the HTTP/WebSocket clients share.

`parse_url` is strict where `urllib.parse.urlsplit` is lenient (`http://[::1]evil.example/` is
refused, not read as loopback), so a URL `validate` accepts is one the clients can use, and a
URL the clients refuse was already reported by `validate`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_HOST_NAME = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=]+")
_PORT = re.compile(r"[0-9]{1,5}")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


class BadURL(ValueError):
    """A URL that cannot be used; the message says why, without repeating the URL."""


@dataclass(frozen=True)
class URL:
    scheme: str
    host: str  # without brackets for IPv6
    port: int | None
    username: str | None  # percent-decoded
    password: str | None

    @property
    def has_credentials(self) -> bool:
        return self.username is not None


def parse_url(url: str) -> URL:
    """Split an absolute URL into its parts, or raise `BadURL` saying what is wrong."""
    if _UNSAFE.search(url):
        raise BadURL("contains a space or a control character")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL" and friends
        raise BadURL(f"cannot be parsed ({exc})") from None
    if not parts.scheme or not parts.netloc:
        raise BadURL("is not an absolute URL (scheme://host/...)")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username, password = unquote(user), (unquote(secret) if colon else None)
    if hostport.startswith("["):
        inside, bracket, rest = hostport[1:].partition("]")
        if not bracket:
            raise BadURL("has an unclosed [ in its host")
        try:
            ipaddress.IPv6Address(inside)
        except ValueError:
            raise BadURL(f"has an invalid IPv6 address [{inside}]") from None
        host = inside
    else:
        host, colon, port_text = hostport.partition(":")
        rest = colon + port_text
        if not host or not _HOST_NAME.fullmatch(host):
            raise BadURL("has no valid host name")
    port = None
    if rest:
        if not rest.startswith(":") or not _PORT.fullmatch(rest[1:]) or int(rest[1:]) > 65535:
            raise BadURL("has text after the host that is not a :port")
        port = int(rest[1:])
    return URL(parts.scheme.lower(), host.lower(), port, username, password)


def is_loopback(host: str) -> bool:
    """True for localhost names and 127.0.0.0/8 / ::1 (where plain http/ws is acceptable)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def without_credentials(url: str) -> str:
    """`url` with any user:password replaced by `***` (for messages and displays)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority_end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority = rest[:authority_end]
    if "@" not in authority:
        return url
    return f"{scheme}://***@{authority.rpartition('@')[2]}{rest[authority_end:]}"


def url_problem(url: str, *, schemes: tuple[str, str] = ("https", "http")) -> str | None:
    """Why `url` cannot be used as an endpoint (None when it can): parse, scheme, https off loopback."""
    secure, plain = schemes
    try:
        parts = parse_url(url)
    except BadURL as exc:
        return str(exc)
    if parts.scheme not in schemes:
        return f"must be a {secure}:// URL"
    if parts.scheme == plain and not is_loopback(parts.host):
        return f"uses {plain}:// to a non-loopback host (use {secure}://; plain {plain} only for 127.0.0.1/localhost)"
    return None
