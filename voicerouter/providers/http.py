"""What every HTTP provider client shares: one pooled httpx client, URL rules, error mapping.

Status -> error class is decided here once, so every vendor module maps failures the same way:
401/403 auth, 400/404/413/415/422 request, 429 rate limit (Retry-After), 408/409/5xx transient,
transport failures and timeouts transient. Vendor modules only add their own body parsing.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from voicerouter.config.secrets import redact, remember_url_credentials
from voicerouter.errors import (
    AuthError,
    ConfigError,
    ProviderError,
    ProviderTimeout,
    RateLimitedError,
    RequestError,
    TransientProviderError,
)
from voicerouter.netaddr import url_problem, without_credentials
from voicerouter.providers.base import AudioChunk

if TYPE_CHECKING:
    from voicerouter.config.schema import ProviderConfig

SNIPPET_CHARS = 200


def check_base_url(url: str, *, provider: str, schemes: tuple[str, str] = ("https", "http")) -> str:
    """Secure scheme required except on loopback (emulators, local servers). Returns url without trailing /.

    Credentials in the URL (`https://user:${PASS}@host`) become secrets to redact, in every form.
    """
    problem = url_problem(url, schemes=schemes)
    if problem:
        raise ConfigError(redact(f"provider {provider}: base_url {without_credentials(url)!r} {problem}"))
    remember_url_credentials(url)
    return url.rstrip("/")


def ws_url(http_url: str) -> str:
    """The WebSocket URL that belongs to an HTTP base URL."""
    if http_url.startswith("https://"):
        return "wss://" + http_url[len("https://") :]
    if http_url.startswith("http://"):
        return "ws://" + http_url[len("http://") :]
    return http_url


def make_client(
    base_url: str, *, headers: Mapping[str, str] | None = None, timeout_s: float = 30.0, connect_timeout_s: float = 5.0
) -> httpx.AsyncClient:
    """One client per provider instance: connection pooling and keep-alive across turns."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers=dict(headers or {}),
        timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=16, keepalive_expiry=30.0),
        http2=False,
    )


def snippet(body: bytes | str) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = redact(" ".join(text.split()))  # before the cut, so no piece of a secret is left at the edge
    if len(text) > SNIPPET_CHARS:
        text = text[:SNIPPET_CHARS] + "..."
    return text


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI) or `Retry-After` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def error_for_status(
    status: int, message: str, *, provider: str, headers: Mapping[str, str] | None = None
) -> ProviderError:
    """The typed error for an HTTP status (message already vendor-parsed and redacted)."""
    headers = headers or {}
    text = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if status in (401, 403):
        return AuthError(text, provider=provider, status=status, hint="check the API key and its permissions")
    if status == 429:
        return RateLimitedError(text, provider=provider, status=status, retry_after=parse_retry_after(headers))
    if status in (408, 409) or status >= 500:
        return TransientProviderError(text, provider=provider, status=status)
    return RequestError(text, provider=provider, status=status)


async def raise_for_response(response: httpx.Response, *, provider: str, message_of=None) -> None:
    """Raise the typed error for a non-2xx response; `message_of(body_bytes)` extracts the vendor's message."""
    if response.is_success:
        return
    body = await response.aread()
    message = None
    if message_of is not None:
        try:
            message = message_of(body)
        except Exception:  # an unparseable error body still yields the status error
            message = None
    raise error_for_status(
        response.status_code, redact(message) if message else snippet(body), provider=provider, headers=response.headers
    )


def transport_error(exc: Exception, *, provider: str) -> ProviderError:
    """Map an httpx/websockets/OS failure to a transient error that names what happened."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(f"timed out ({type(exc).__name__})", provider=provider)
    if isinstance(exc, httpx.RemoteProtocolError):
        return TransientProviderError(f"connection closed mid-response: {redact(str(exc))}", provider=provider)
    return TransientProviderError(f"connection failed: {type(exc).__name__}: {redact(str(exc))}", provider=provider)


def malformed(what: str, body: bytes | str, *, provider: str) -> TransientProviderError:
    return TransientProviderError(f"malformed response ({what}): {snippet(body)!r}", provider=provider)


async def refuse_text_body(response: httpx.Response, *, provider: str) -> None:
    """A 2xx that carries JSON or text where raw PCM was asked for (a proxy's page, a vendor error) is malformed."""
    content_type = response.headers.get("content-type", "")
    if content_type.startswith(("application/json", "text/")):
        raise malformed(f"content-type {content_type}", await response.aread(), provider=provider)


async def pcm_chunks(response: httpx.Response, sample_rate: int) -> AsyncIterator[AudioChunk]:
    """A streamed raw PCM16 body as audio chunks, as it arrives; a trailing odd byte is dropped."""
    carry = b""
    async for data in response.aiter_bytes():
        data = carry + data
        usable = len(data) - len(data) % 2  # never split a sample between chunks
        carry = data[usable:]
        if usable:
            yield AudioChunk(data[:usable], sample_rate)


class ClientProvider:
    """The shell of a vendor HTTP provider: its name and entry, one pooled client, transport-error mapping."""

    def __init__(
        self, name: str, config: ProviderConfig, *, base_url: str, timeout_s: float, headers: Mapping[str, str]
    ) -> None:
        self.name = name
        self.config = config
        self._client = make_client(
            base_url,
            headers={**headers, "User-Agent": "voicerouter"},
            timeout_s=timeout_s,
            connect_timeout_s=min(5.0, timeout_s),  # a short timeout_ms bounds the connect as well
        )

    def _error(self, exc: Exception) -> ProviderError:
        return transport_error(exc, provider=self.name).with_context(provider=self.name)

    async def _post_for_pcm(
        self, path: str, sample_rate: int, *, message_of: Any = None, **request: Any
    ) -> AsyncIterator[AudioChunk]:
        """POST for a raw PCM16 answer and yield it as it streams in, every failure typed."""
        try:
            async with self._client.stream("POST", path, **request) as response:
                await raise_for_response(response, provider=self.name, message_of=message_of)
                await refuse_text_body(response, provider=self.name)
                async for chunk in pcm_chunks(response, sample_rate):
                    yield chunk
        except httpx.HTTPError as exc:
            raise self._error(exc) from None

    async def aclose(self) -> None:
        await self._client.aclose()
