"""Who may open `WS /v1/sessions`: a bearer secret, and short-lived session tokens minted from it.

Apps send `Authorization: Bearer <credential>` on the WebSocket handshake. Browsers cannot set
headers on a WebSocket, so they offer it as a subprotocol instead, `new WebSocket(url,
["voicerouter.v1", "bearer.<credential>"])` (what Kubernetes does with `base64url.bearer.
authorization.k8s.io.<token>` and Deepgram with `["token", key]`); the server selects
`voicerouter.v1` and never echoes the credential. A query-string token is not accepted: URLs end
up in proxies' and browsers' logs.

A browser should never hold the long-lived secret. As with OpenAI's ephemeral client secrets or
Twilio's access tokens, the operator's own backend (which knows who its user is) calls `POST
/v1/tokens` with the secret and hands the page a token that expires in minutes and may be bound
to one tenant. A token is `vrt1.<payload>.<signature>`: the payload is base64url JSON (expiry,
tenant, a nonce), the signature HMAC-SHA256 under a key derived from the secret, so changing the
secret revokes every token. Comparisons are constant-time; credentials are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

ENV_VAR = "VOICEROUTER_AUTH_TOKEN"
SUBPROTOCOL = "voicerouter.v1"
BEARER_PROTOCOL = "bearer."  # a subprotocol that carries the credential: bearer.<credential>
TOKEN_PREFIX = "vrt1."
MAX_TENANT = 128


@dataclass(frozen=True)
class Grant:
    kind: str  # secret | token
    tenant: str | None = None  # a token bound to a tenant only opens that tenant's sessions


class AuthError(Exception):
    """Why a credential is refused (the message is safe to show: it never holds the credential)."""


class SessionAuth:
    def __init__(self, secret: str | None, *, max_ttl_s: int = 300) -> None:
        self._secret = secret.encode() if secret else None
        self.max_ttl_s = max_ttl_s
        self._key = hmac.new(self._secret, b"voicerouter session tokens v1", hashlib.sha256).digest() if secret else b""

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    def is_secret(self, credential: str) -> bool:
        return self._secret is not None and hmac.compare_digest(credential.encode(), self._secret)

    def mint(self, ttl_s: int | None = None, tenant: str | None = None, *, now: float | None = None) -> tuple[str, int]:
        """A session token and its expiry (unix seconds); `ttl_s` is capped at `max_ttl_s`."""
        if not self.enabled:
            raise AuthError("authentication is off: there is no secret to sign tokens with")
        ttl = self.max_ttl_s if ttl_s is None else min(int(ttl_s), self.max_ttl_s)
        if ttl <= 0:
            raise AuthError("ttl_s must be positive")
        if tenant is not None and not (0 < len(tenant) <= MAX_TENANT):
            raise AuthError(f"tenant must be 1-{MAX_TENANT} characters")
        expires = int((time.time() if now is None else now) + ttl)
        claims = {"exp": expires, "n": secrets.token_urlsafe(9), **({"tenant": tenant} if tenant else {})}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}{payload}.{self._sign(payload)}", expires

    def check(self, credential: str | None, *, now: float | None = None) -> Grant:
        """The grant a credential carries; raises AuthError with the reason when there is none."""
        if not self.enabled:
            return Grant("open")
        if not credential:
            raise AuthError("missing credentials: send 'Authorization: Bearer <token>', or from a browser the "
                            f"subprotocols '{SUBPROTOCOL}' and '{BEARER_PROTOCOL}<token>'")
        if self.is_secret(credential):
            return Grant("secret")
        if not credential.startswith(TOKEN_PREFIX) or credential.count(".") != 2:
            raise AuthError("invalid token")
        payload, _, signature = credential[len(TOKEN_PREFIX):].partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            raise AuthError("invalid token")
        try:
            claims = json.loads(_unb64(payload))
            expires = int(claims["exp"])
            tenant = claims.get("tenant")
        except (ValueError, KeyError, TypeError):
            raise AuthError("invalid token") from None
        if (time.time() if now is None else now) >= expires:
            raise AuthError("token expired: mint a new one with POST /v1/tokens")
        return Grant("token", str(tenant) if tenant else None)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, (TOKEN_PREFIX + payload).encode(), hashlib.sha256).digest())


def credential_of(authorization: str | None, protocols: str | None) -> str | None:
    """The credential of a request: its `Authorization: Bearer` header, else a `bearer.` subprotocol."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for protocol in (protocols or "").split(","):
        protocol = protocol.strip()
        if protocol.startswith(BEARER_PROTOCOL) and len(protocol) > len(BEARER_PROTOCOL):
            return protocol[len(BEARER_PROTOCOL):]
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
