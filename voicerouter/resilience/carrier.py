"""Call and SMS chains: a `CallProvider`/`SMSProvider` over the route's carriers, failover inside.

A placement is one result, not a stream, so the whole request of one attempt is the "first
result": its deadline is the carrier's own request timeout (`timeout_ms`), and the runner only
enforces the stage's `turn_deadline_ms` over all attempts. Cutting an attempt short from outside
would leave "was the call placed?" unanswered; the carrier clients answer it themselves (status
check, idempotent retry) and raise `UnknownOutcomeError` when they cannot, which stops the chain.

The outcome records every attempt (carrier, attempt number, error reason), so a caller sees how
many attempts and failovers a call took, and which carrier took it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from voicerouter.errors import ProviderError
from voicerouter.providers.carrier import CallRequest, PlacedCall, SentMessage, SMSRequest
from voicerouter.resilience.chain import ChainProvider, Member, last_item
from voicerouter.resilience.retry import as_provider_error

R = TypeVar("R", PlacedCall, SentMessage)


@dataclass(frozen=True)
class Attempt:
    carrier: str
    attempt: int  # 1-based, per carrier
    ok: bool
    reason: str | None = None  # the error's reason when it failed
    error: str | None = None
    code: int | None = None  # the carrier's error code, when it sent one


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """What a placement took: the result (None when it failed) and every attempt on the way."""

    result: R | None
    attempts: tuple[Attempt, ...] = ()
    error: ProviderError | None = None
    elapsed_s: float = 0.0
    route: str | None = None
    session_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None

    def unwrap(self) -> R:
        """The call or message, or raise the error that stopped it."""
        if self.result is None:
            assert self.error is not None
            raise self.error
        return self.result

    @property
    def failovers(self) -> int:
        """How many times the chain moved on to another carrier."""
        carriers = [a.carrier for a in self.attempts]
        return sum(1 for prev, cur in zip(carriers, carriers[1:], strict=False) if prev != cur)

    def to_dict(self) -> dict[str, Any]:
        result = dataclasses.asdict(self.result) if self.result is not None else None
        if result is not None:
            result["from"] = result.pop("from_number")
        return {
            "ok": self.result is not None,
            "route": self.route,
            "session_id": self.session_id,
            "carrier": self.result.carrier if self.result else None,
            "result": result,
            "attempts": [dataclasses.asdict(a) for a in self.attempts],
            "failovers": self.failovers,
            "elapsed_ms": round(self.elapsed_s * 1000, 1),
            "error": None if self.error is None else {
                "reason": self.error.reason, "message": self.error.message, "code": self.error.code,
                "provider": self.error.provider,
            },
        }


@dataclass
class _Recorder:
    attempts: list[Attempt] = field(default_factory=list)

    def op(self, call: Callable[[Any], Awaitable[R]]) -> Callable[[Member, int], AsyncIterator[R]]:
        async def run(member: Member, attempt: int) -> AsyncIterator[R]:
            try:
                result = await call(member.provider)
            except Exception as exc:
                error = as_provider_error(exc, member.name)
                self.attempts.append(Attempt(member.name, attempt, False, error.reason, error.message, error.code))
                raise
            self.attempts.append(Attempt(member.name, attempt, True))
            yield result

        return run


class _CarrierChain(ChainProvider):
    async def _place(self, call: Callable[[Any], Awaitable[R]]) -> Outcome[R]:
        recorder = _Recorder()
        started = time.monotonic()
        try:
            # the attempt's own request timeout governs; the runner keeps only the stage deadline
            result = await last_item(self.runner.run(recorder.op(call),
                                                     first_timeout_s=self.runner.settings.turn_deadline_s))
        except ProviderError as exc:
            return Outcome(None, tuple(recorder.attempts), exc, time.monotonic() - started)
        return Outcome(result, tuple(recorder.attempts), None, time.monotonic() - started)


class CallChain(_CarrierChain):
    kind = "call"

    async def place_call(self, request: CallRequest) -> PlacedCall:
        return (await self.place(request)).unwrap()

    async def place(self, request: CallRequest) -> Outcome[PlacedCall]:
        """Place the call through the first carrier that takes it; never raises for a carrier failure."""
        return await self._place(lambda carrier: carrier.place_call(request))


class SMSChain(_CarrierChain):
    kind = "sms"

    async def send_sms(self, request: SMSRequest) -> SentMessage:
        return (await self.send(request)).unwrap()

    async def send(self, request: SMSRequest) -> Outcome[SentMessage]:
        return await self._place(lambda carrier: carrier.send_sms(request))
