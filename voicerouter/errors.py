"""Typed errors shared by every layer.

Errors carry enough context (provider instance, route, session, file and line) for a one-line
message, and their class tells the resilience layer what to do: retry, fail over, or give up.
The CLI turns any `VoiceRouterError` into a message and an exit code, never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Documented exit codes (README "Exit codes").
EXIT_OK = 0
EXIT_FAILED = 1  # invalid table, failed expectation, session error
EXIT_USAGE = 2  # bad flags, nothing to work on
EXIT_PROVIDER = 3  # every provider of a stage failed, missing secret, capacity refusal
EXIT_AUDIO = 4  # audio device or PortAudio problem
EXIT_REJECTED = 5  # a carrier refused the recipient (invalid number, opted out): no carrier was tried after it
EXIT_UNKNOWN = 6  # a call or message may have gone out; not retried elsewhere so it cannot be duplicated
EXIT_INTERRUPTED = 130


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """`text` with control characters escaped (`\\n`, `\\x00`): a message is one line, and input
    (a key holding a newline, a file name) can never forge another."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class VoiceRouterError(Exception):
    """Base of every error voicerouter raises on purpose."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(VoiceRouterError):
    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Location:
    """Where in a file something is; line and column are 1-based."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        parts = [printable(self.file)]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)


class ConfigError(VoiceRouterError):
    """A routing table that cannot be read, parsed or used."""

    def __init__(self, message: str, *, location: Location | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.location = location

    def __str__(self) -> str:
        text = super().__str__()
        return f"{self.location}: {text}" if self.location else text


class AudioError(VoiceRouterError):
    """An audio file or device that cannot be used."""

    exit_code = EXIT_AUDIO


class AudioFileError(AudioError):
    exit_code = EXIT_FAILED


class ProviderError(VoiceRouterError):
    """A provider call failed. Subclasses say whether retrying can help."""

    exit_code = EXIT_PROVIDER
    retryable = True
    fails_over = True  # False: the next provider must not be tried either (the request itself is refused)
    code: int | None = None  # the vendor's own error code, when it sends one (carriers)

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        route: str | None = None,
        session_id: str | None = None,
        status: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.provider = provider
        self.route = route
        self.session_id = session_id
        self.status = status

    def with_context(
        self, *, provider: str | None = None, route: str | None = None, session_id: str | None = None
    ) -> ProviderError:
        """Fill in context that the raising layer did not know (returns self)."""
        self.provider = self.provider or provider
        self.route = self.route or route
        self.session_id = self.session_id or session_id
        return self

    @property
    def reason(self) -> str:
        """Short machine-friendly reason used in events and reports (timeout, rate_limited, auth, ...)."""
        for cls in type(self).__mro__:
            if cls in _REASONS:
                return _REASONS[cls]
        return "error"

    def __str__(self) -> str:
        ctx = [
            f"{k}={v}"
            for k, v in (("provider", self.provider), ("route", self.route), ("session", self.session_id))
            if v
        ]
        text = super().__str__()
        return f"{text} [{' '.join(ctx)}]" if ctx else text


class TransientProviderError(ProviderError):
    """5xx, 408, connection failures, malformed responses: retry, then fail over."""


class ProviderTimeout(TransientProviderError):
    """No first result, or a stall between chunks, within the deadline."""


class RateLimitedError(TransientProviderError):
    """429: retry after `retry_after` seconds if that fits the deadline, else fail over."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    """Retrying the same request cannot help: fail over at once and mark the provider unhealthy."""

    retryable = False


class AuthError(PermanentProviderError):
    """401/403: the key is wrong, missing or not allowed."""


class RequestError(PermanentProviderError):
    """400/404/422: the provider rejected the request itself."""


class MissingSecretError(PermanentProviderError):
    """An `${ENV_VAR}` the table references is not set."""


class PermissionDeniedError(PermanentProviderError):
    """The account may not do this from this number or to this region (carrier geo permissions): fail over."""


class TerminalProviderError(ProviderError):
    """The request itself is refused for a reason another provider would not change: stop, no failover."""

    retryable = False
    fails_over = False
    exit_code = EXIT_REJECTED


class RecipientError(TerminalProviderError):
    """The destination is invalid or cannot receive this (carrier codes 21211, 21614, 10002, 10016)."""


class OptedOutError(TerminalProviderError):
    """The recipient opted out (Twilio 21610): sending through another carrier would break compliance."""


class UnknownOutcomeError(TerminalProviderError):
    """A call or message may have gone out and its status cannot be checked: never sent again elsewhere."""

    exit_code = EXIT_UNKNOWN


class CapacityError(ProviderError):
    """No provider (or the route) has room for another session."""

    retryable = False


class AllProvidersFailed(ProviderError):
    """Every provider of a stage failed for this turn."""

    retryable = False

    def __init__(self, stage: str, errors: list[ProviderError], **kw) -> None:
        detail = "; ".join(f"{e.provider or '?'}: {e.message}" for e in errors) or "no provider available"
        super().__init__(f"every {stage} provider failed ({detail})", **kw)
        self.stage = stage
        self.errors = errors


_REASONS: dict[type, str] = {
    ProviderTimeout: "timeout",
    RateLimitedError: "rate_limited",
    TransientProviderError: "transient",
    AuthError: "auth",
    RequestError: "bad_request",
    MissingSecretError: "missing_secret",
    PermissionDeniedError: "permission",
    PermanentProviderError: "permanent",
    RecipientError: "bad_recipient",
    OptedOutError: "opted_out",
    UnknownOutcomeError: "unknown_outcome",
    TerminalProviderError: "terminal",
    CapacityError: "capacity",
    AllProvidersFailed: "all_failed",
}
