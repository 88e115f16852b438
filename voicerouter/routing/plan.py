"""What routing decides for one session: the `RouteContext` in, the `SessionPlan` out."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the schema (pydantic) is imported by what builds plans, not by `RouteContext`'s users
    from voicerouter.config.schema import (
        AgentConfig,
        BargeInConfig,
        DtmfConfig,
        ProviderConfig,
        ResilienceConfig,
        TurnConfig,
        VadConfig,
    )

Pipeline = Literal["stt_tts", "s2s"]
Stage = Literal["stt", "tts", "s2s", "call", "sms"]
Strategy = Literal["failover", "round_robin", "least_latency", "split"]


@dataclass(frozen=True)
class RouteContext:
    """Who the session is for. Missing flags count as false."""

    tenant: str | None = None
    region: str | None = None
    flags: dict[str, bool] = field(default_factory=dict)
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def flag(self, name: str) -> bool:
        return self.flags.get(name, False)


@dataclass(frozen=True)
class StagePlan:
    """One stage's providers, in the order to try them."""

    stage: Stage
    providers: tuple[str, ...]  # failover order; for a split the picked bucket comes first
    strategy: Strategy = "failover"
    split: dict[str, float] | None = None  # the weights, when strategy == "split"
    picked: str | None = None  # the bucket this session fell into

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"providers": list(self.providers), "strategy": self.strategy}
        if self.split is not None:
            out["split"] = dict(self.split)
            out["picked"] = self.picked
        return out


@dataclass(frozen=True)
class SessionPlan:
    """Everything a session needs to run, and why it was chosen."""

    context: RouteContext
    route: str  # route name, or "defaults"
    matched: bool  # False when no route matched and defaults apply
    reasons: tuple[str, ...]  # the match conditions that made the route win
    pipeline: Pipeline
    stt: StagePlan | None
    tts: StagePlan | None
    s2s: StagePlan | None
    vad: VadConfig
    turn: TurnConfig
    agent: AgentConfig
    resilience: ResilienceConfig
    barge_in: BargeInConfig
    instructions: str | None
    providers: dict[str, ProviderConfig]  # every provider instance the plan uses, by name
    warnings: tuple[str, ...] = ()
    call: StagePlan | None = None  # carriers for outbound calls (`place_call`), not part of the voice pipeline
    sms: StagePlan | None = None  # carriers for messages (`send_sms`)
    dtmf: DtmfConfig = field(default_factory=lambda: _default_dtmf())  # keypad digits: events, barge-in, keypad turns

    @property
    def session_id(self) -> str:
        return self.context.session_id

    def stages(self) -> list[StagePlan]:
        """The voice pipeline's stages (what a session builds)."""
        return [s for s in (self.stt, self.tts, self.s2s) if s is not None]

    def carrier_stages(self) -> list[StagePlan]:
        """The carrier stages (`call`, `sms`) the route defines."""
        return [s for s in (self.call, self.sms) if s is not None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view; secrets appear only as written (`${VAR}`) or masked."""
        from voicerouter.config.secrets import mask_value

        def stage_list(stage: StagePlan | None) -> list[str] | None:
            return list(stage.providers) if stage else None

        return {
            "session_id": self.session_id,
            "tenant": self.context.tenant,
            "region": self.context.region,
            "flags": dict(self.context.flags),
            "route": self.route,
            "matched": self.matched,
            "reasons": list(self.reasons),
            "pipeline": self.pipeline,
            "stt": stage_list(self.stt),
            "tts": stage_list(self.tts),
            "s2s": stage_list(self.s2s),
            "stages": {s.stage: s.to_dict() for s in self.stages() + self.carrier_stages()},
            "vad": self.vad.model_dump(),
            "turn": self.turn.model_dump(),
            "agent": {k: mask_value(k, v) for k, v in self.agent.model_dump().items()},
            "resilience": self.resilience.model_dump(),
            "barge_in": self.barge_in.model_dump(),
            "dtmf": self.dtmf.model_dump(),
            "providers": {s.stage: list(s.providers) for s in self.stages() + self.carrier_stages()},
            "provider_configs": {
                name: {k: mask_value(k, v) for k, v in cfg.model_dump(exclude_none=True, by_alias=True).items()}
                for name, cfg in self.providers.items()
            },
            "warnings": list(self.warnings),
        }


def _default_dtmf() -> DtmfConfig:
    from voicerouter.config.schema import DtmfConfig

    return DtmfConfig()
