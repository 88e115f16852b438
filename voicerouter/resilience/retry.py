"""What to do after a failed attempt: the error's class decides between retry, wait, and failover.

Backoff is exponential with full jitter (a random delay in [0, min(max, base * 2**attempt)]), so
many sessions retrying the same provider do not hammer it in lockstep.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Literal

from voicerouter.config.schema import BackoffConfig
from voicerouter.errors import (
    PermanentProviderError,
    ProviderError,
    ProviderTimeout,
    RateLimitedError,
    TransientProviderError,
)


def backoff_delay(attempt: int, backoff: BackoffConfig, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (1-based)."""
    cap = min(backoff.max_ms, backoff.base_ms * (2 ** max(0, attempt - 1))) / 1000
    return rng.uniform(0, cap)


def as_provider_error(exc: BaseException, provider: str) -> ProviderError:
    """Any failure of a provider call as a typed error, so it can drive failover instead of crashing the turn."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return ProviderTimeout("timed out", provider=provider)
    text = str(exc) or type(exc).__name__
    return TransientProviderError(f"unexpected {type(exc).__name__}: {text}", provider=provider)


@dataclass(frozen=True)
class Decision:
    action: Literal["retry", "failover"]
    delay_s: float = 0.0
    why: str = ""


def decide(
    error: ProviderError,
    *,
    attempt: int,
    retries: int,
    remaining_s: float,
    has_next: bool,
    backoff: BackoffConfig,
    rng: random.Random,
    realtime: bool = True,
) -> Decision:
    """Retry the same provider, or move on. `attempt` counts the attempts already made (1 = first).
    `realtime=False` (carriers): a 429 is retried like other transient errors before failing over."""
    if isinstance(error, PermanentProviderError) or not error.retryable:
        return Decision("failover", why="permanent")
    if attempt > retries:
        return Decision("failover", why="retries exhausted")
    if isinstance(error, RateLimitedError) and has_next and realtime:
        # A healthy fallback answers now; waiting out Retry-After would be dead air. The runner
        # remembers the Retry-After and skips this provider until it has passed.
        return Decision("failover", why="rate_limited")
    if isinstance(error, RateLimitedError) and error.retry_after is not None:
        if error.retry_after < remaining_s:
            return Decision("retry", error.retry_after, "retry_after")
        return Decision("failover", why="retry_after beyond deadline")
    if isinstance(error, ProviderTimeout) and has_next:
        # A provider that hung once will likely hang again; a retry would double the dead air.
        return Decision("failover", why="timeout")
    if not isinstance(error, TransientProviderError):
        return Decision("failover", why="not retryable")
    delay = backoff_delay(attempt, backoff, rng)
    if delay >= remaining_s:
        return Decision("failover", why="backoff beyond deadline")
    return Decision("retry", delay, "backoff")
