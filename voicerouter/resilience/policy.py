"""One stage's effective resilience settings: the route's defaults with the stage's overrides applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from voicerouter.config.schema import BackoffConfig, BreakerConfig, HealthConfig, OutlierConfig, ResilienceConfig

StageName = Literal["stt", "tts", "s2s", "agent", "call", "sms"]


@dataclass(frozen=True)
class StageSettings:
    """Seconds rather than milliseconds, so the loop code does no unit juggling."""

    stage: StageName
    retries: int
    first_result_timeout_s: float
    stall_timeout_s: float
    hedge_after_s: float | None
    turn_deadline_s: float
    backoff: BackoffConfig
    breaker: BreakerConfig
    health: HealthConfig
    # a person is waiting on the line (stt/tts/s2s/agent): a 429 fails over at once rather than
    # waiting; carriers (call/sms) have no dead air to avoid, so they retry a 429 before moving on
    realtime: bool = True
    hedge_auto: bool = False  # hedge after the provider's own recent p90, within hedge_budget
    hedge_budget: float = 0.1
    outlier: OutlierConfig = field(default_factory=OutlierConfig)

    @classmethod
    def resolve(cls, policy: ResilienceConfig, stage: StageName) -> StageSettings:
        override = getattr(policy, stage)

        def pick(field: str):  # a stage override wins when it is set
            value = getattr(override, field)
            return getattr(policy, field) if value is None else value

        hedge = pick("hedge_after_ms")
        return cls(
            stage=stage,
            retries=pick("retries"),
            first_result_timeout_s=pick("first_result_timeout_ms") / 1000,
            stall_timeout_s=pick("stall_timeout_ms") / 1000,
            hedge_after_s=None if hedge is None or hedge == "auto" else hedge / 1000,
            hedge_auto=hedge == "auto",
            hedge_budget=policy.hedge_budget,
            outlier=policy.outlier,
            turn_deadline_s=pick("turn_deadline_ms") / 1000,
            backoff=policy.backoff,
            breaker=policy.breaker,
            health=policy.health,
            realtime=stage not in ("call", "sms"),
        )
