"""The routing table's schema (pydantic): one source for validation and `voicerouter schema`.

Unknown keys are errors everywhere (`extra="forbid"`), so a typo never silently does nothing.
Secrets stay as `${ENV_VAR}` strings here; they are resolved only when a provider is built.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Kind = Literal["stt", "tts", "s2s", "call", "sms"]
Strategy = Literal["failover", "round_robin", "least_latency"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # NaN weights, inf timeouts: no

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Strict:
        # Frozen values are shared, not copied: pydantic deep-copies model defaults for every
        # instance, which made a 10,000-route table spend seconds copying VadConfig() and friends.
        return self


class ProviderConfig(Strict):
    """One named provider instance."""

    type: str = Field(description="Provider type, e.g. pocketsphinx, piper, deepgram, openai.")
    kind: Kind | None = Field(None, description="stt, tts, s2s, call or sms; inferred when the type has one kind.")
    model: str | None = None
    voice: str | None = None
    language: str | None = None
    api_key: str | None = Field(None, description="Always an environment reference: ${VAR}.")
    base_url: str | None = Field(None, description="Override the endpoint (regional, proxy, self-hosted).")
    region: str | None = Field(None, description="Cloud region for providers that need one (azure).")
    sample_rate: int | None = Field(None, gt=0)
    timeout_ms: int | None = Field(None, gt=0, description="Overall HTTP timeout of one request.")
    max_concurrent_sessions: int | None = Field(None, gt=0)
    account_sid: str | None = Field(None, description="Carrier account id (twilio).")
    auth_token: str | None = Field(None, description="Carrier auth token (twilio); always an environment reference: ${VAR}.")
    from_number: str | None = Field(None, alias="from", description="Carrier caller id / sender, E.164 (+15550100).")
    connection_id: str | None = Field(None, description="Call Control connection (telnyx).")
    messaging_profile_id: str | None = Field(None, description="Messaging profile (telnyx).")
    options: dict[str, Any] = Field(default_factory=dict, description="Vendor-specific extras.")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SplitSpec(Strict):
    """A weighted split, sticky per session id."""

    split: dict[str, float] = Field(description="provider name -> weight (> 0)")
    fallback: list[str] = Field(default_factory=list, description="Tried after the picked provider.")


class ChainSpec(Strict):
    """An ordered list with a selection strategy; every strategy still fails over."""

    strategy: Strategy = "failover"
    providers: list[str]


StageSpec = Annotated[
    list[str] | SplitSpec | ChainSpec | str,
    Field(description="A provider name, an ordered failover list, {split: {...}} or {strategy, providers}."),
]


class VadConfig(Strict):
    engine: Literal["webrtc", "silero"] = Field(
        "webrtc", description="webrtc (default, fast) or silero (neural, robust in noise; needs the silero-vad model)."
    )
    aggressiveness: int = Field(2, ge=0, le=3, description="webrtc only: 0 (least) to 3 (most aggressive).")
    threshold: float | None = Field(
        None, ge=0, le=1, description="silero only: speech probability that counts as voiced (default 0.5)."
    )
    frame_ms: Literal[10, 20, 30] = 30
    start_ms: int = Field(90, ge=0, description="Voiced audio needed to start speech.")
    stop_ms: int = Field(150, ge=0, description="Unvoiced audio needed to end a speech region.")
    preroll_ms: int = Field(300, ge=0, description="Audio kept from before speech start.")

    @model_validator(mode="after")
    def _threshold_is_silero(self) -> VadConfig:
        if self.threshold is not None and self.engine != "silero":
            raise ValueError("threshold is a silero setting: set engine: silero, or drop threshold")
        return self


class TurnConfig(Strict):
    engine: Literal["heuristic"] = "heuristic"
    silence_ms: int = Field(600, ge=0, description="Base silence after speech that ends a turn.")
    complete_silence_ms: int = Field(350, ge=0, description="When the partial ends like a sentence.")
    incomplete_silence_ms: int = Field(1200, ge=0, description="After a filler or conjunction.")
    digits_silence_ms: int = Field(1500, ge=0, description="After a digit sequence.")
    min_pause_ms: int = Field(300, ge=0, description="Never end a turn on a shorter pause.")
    min_turn_ms: int = Field(250, ge=0, description="Shorter speech is not a turn (a cough, a click).")
    max_turn_ms: int = Field(30000, gt=0, description="Force a turn end after this much speech.")
    fillers: list[str] | None = Field(None, description="Words that mean 'more is coming'.")


class AgentConfig(Strict):
    """The agent, or an ordered chain of agents: `agent: echo`, `agent: {type: ...}` or
    `agent: [{type: openai-chat, ...}, {type: webhook, ...}, echo]` (the first is preferred; the
    others are its `fallbacks`, with the same deadlines, retries, breakers and hedging as a stage)."""

    type: Literal["echo", "webhook", "openai-chat"] = "echo"
    name: str | None = Field(None, description="Names the agent in events, breakers and --inject (default: its type).")
    url: str | None = None
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    system_prompt: str | None = None
    timeout_ms: int = Field(5000, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    max_history: int = Field(20, ge=0)
    continuation: Literal["assistant", "prefix", "continue_final_message"] = Field(
        "assistant",
        description="openai-chat: how a reply cut mid-stream is continued: the heard part as the last "
        "(assistant) message; with `prefix: true` on it (DeepSeek, Mistral); or with "
        "`continue_final_message: true` (vLLM).",
    )
    fallback_reply: str | None = Field(None, description="Spoken when every agent of the chain fails.")
    fallbacks: list[AgentConfig] = Field(default_factory=list, description="Agents tried after this one, in order.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):  # an ordered chain: the first agent, the others as its fallbacks
            if not value:
                raise ValueError("an agent chain needs at least one agent")
            first = {"type": value[0]} if isinstance(value[0], str) else value[0]
            if isinstance(first, AgentConfig):
                first = first.model_dump(exclude_unset=True)
            if not isinstance(first, dict):
                return value
            return {**first, "fallbacks": list(value[1:]) + list(first.get("fallbacks", []))}
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _flat_chain(self) -> AgentConfig:
        if any(fallback.fallbacks for fallback in self.fallbacks):
            raise ValueError("a fallback agent cannot have fallbacks of its own; list the chain in one place")
        names = [agent.label for agent in self.chain()]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ValueError(f"two agents of the chain are called {duplicate!r}; give them distinct `name`s")
        return self

    @property
    def label(self) -> str:
        return self.name or self.type

    def chain(self) -> list[AgentConfig]:
        """The agents in order, each without fallbacks."""
        return [self.model_copy(update={"fallbacks": []}), *self.fallbacks]


class BackoffConfig(Strict):
    base_ms: int = Field(100, ge=0)
    max_ms: int = Field(2000, ge=0)


class BreakerConfig(Strict):
    failures: int = Field(3, gt=0, description="Consecutive failures that open the breaker.")
    failure_rate: float | None = Field(None, gt=0, le=1, description="Or a failure rate over `window`.")
    window: int = Field(20, gt=0)
    cooldown_s: float = Field(30, ge=0)


class HealthConfig(Strict):
    interval_s: float | None = Field(None, gt=0, description="Background probe interval; off if unset.")
    timeout_ms: int = Field(2000, gt=0)


class OutlierConfig(Strict):
    """Latency outlier ejection: a provider much slower than the one after it is demoted for a while."""

    enabled: bool = True
    margin_ms: int = Field(250, ge=0, description="Demote when its first-result p50 exceeds the next one's by this.")
    min_samples: int = Field(5, gt=0, description="Recent first results both need before they are compared.")
    cooldown_s: float = Field(30, ge=0, description="How long a demotion lasts (x the demotions in a row, up to 10x).")


HedgeAfter = Annotated[int | Literal["auto"] | None, Field(
    None, description="Ms of silence before the next provider is raced, or auto (the provider's own recent p90).")]


class StagePolicy(Strict):
    """Per-stage overrides of the resilience defaults (unset fields inherit)."""

    retries: int | None = Field(None, ge=0)
    first_result_timeout_ms: int | None = Field(None, gt=0)
    stall_timeout_ms: int | None = Field(None, gt=0)
    hedge_after_ms: HedgeAfter = None
    turn_deadline_ms: int | None = Field(None, gt=0)


class ResilienceConfig(Strict):
    retries: int = Field(1, ge=0)
    backoff: BackoffConfig = BackoffConfig()
    first_result_timeout_ms: int = Field(700, gt=0, description="Time to first transcript/audio byte/token.")
    stall_timeout_ms: int = Field(600, gt=0, description="Longest gap between streamed chunks.")
    hedge_after_ms: HedgeAfter = None
    hedge_budget: float = Field(0.1, ge=0, le=1, description="With auto: hedges per call to a provider, at most.")
    outlier: OutlierConfig = OutlierConfig()
    turn_deadline_ms: int = Field(8000, gt=0, description="Budget for one stage of one turn.")
    breaker: BreakerConfig = BreakerConfig()
    health: HealthConfig = HealthConfig()
    max_concurrent_sessions: int | None = Field(None, gt=0, description="Per route.")
    stt: StagePolicy = StagePolicy()
    tts: StagePolicy = StagePolicy()
    s2s: StagePolicy = StagePolicy()
    agent: StagePolicy = StagePolicy()
    call: StagePolicy = StagePolicy()
    sms: StagePolicy = StagePolicy()


class BargeInConfig(Strict):
    enabled: bool = True
    min_speech_ms: int = Field(200, ge=0)
    half_duplex: bool = Field(False, description="Ignore the microphone while the reply plays.")


DTMF_DIGITS = "0123456789*#ABCD"


class DtmfConfig(Strict):
    """Keypad digits (DTMF) from a call. Every digit is an event; with `collect`, digits are gathered
    into a user turn for the agent, ended by the terminator, `max_digits`, or a pause of
    `inter_digit_timeout_ms` on the call's audio clock."""

    collect: bool = Field(True, description="Deliver the digits to the agent as a user turn.")
    terminator: str | None = Field("#", description="The key that ends the entry (not part of it); null for none.")
    inter_digit_timeout_ms: int = Field(3000, gt=0, description="A pause this long after a digit ends the entry.")
    max_digits: int | None = Field(None, gt=0, description="The entry ends once it has this many digits.")
    barge_in: bool = Field(True, description="A keypress stops the reply being spoken.")
    text: str = Field("{digits}", description="The user turn's text; {digits} is replaced by the keys pressed.")
    mask: bool = Field(False, description="Keep the keys out of events and logs (PINs, card numbers): events say "
                       "that and how many keys were pressed; the agent still gets them.")

    @field_validator("terminator")
    @classmethod
    def _one_key(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 1 or value.upper() not in DTMF_DIGITS):
            raise ValueError(f"a terminator is one key of {DTMF_DIGITS}, got {value!r}")
        return None if value is None else value.upper()

    @field_validator("text")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{digits}" not in value:
            raise ValueError("the text must contain {digits}")
        try:
            value.format(digits="1")
        except (KeyError, IndexError, ValueError):
            raise ValueError("the text may use only {digits} in braces (write {{ and }} for literal braces)") from None
        return value


class RouteSettings(Strict):
    """Everything a session gets; `defaults` is one, and a route overrides any part of it."""

    pipeline: Literal["stt_tts", "s2s"] | None = None
    stt: StageSpec | None = None
    tts: StageSpec | None = None
    s2s: StageSpec | None = None
    call: StageSpec | None = Field(None, description="Carriers that place outbound calls, in failover order.")
    sms: StageSpec | None = Field(None, description="Carriers that send SMS, in failover order.")
    vad: VadConfig = VadConfig()
    turn: TurnConfig = TurnConfig()
    agent: AgentConfig = AgentConfig()
    resilience: ResilienceConfig = ResilienceConfig()
    barge_in: BargeInConfig = BargeInConfig()
    dtmf: DtmfConfig = DtmfConfig()
    instructions: str | None = Field(None, description="System prompt for S2S providers and chat agents.")


Patterns = str | list[str]


class MatchSpec(Strict):
    tenant: Patterns | None = Field(None, description="Tenant id, glob or list.")
    region: Patterns | None = Field(None, description="Region, glob like eu-* or list.")
    flags: dict[str, bool] = Field(default_factory=dict, description="Flags that must have these values.")

    @field_validator("tenant", "region")
    @classmethod
    def _not_empty(cls, value: Patterns | None) -> Patterns | None:
        if isinstance(value, list) and not value:
            raise ValueError("an empty list matches nothing; remove the key to match everything")
        return value


class RouteConfig(RouteSettings):
    name: str
    match: MatchSpec = MatchSpec()
    description: str | None = None


class FaultConfig(Strict):
    """Injected failures for chaos tests (see `voicerouter.resilience.faults`)."""

    provider: str
    fault: str = Field(description="e.g. error:503@0.3, hang@turn2, drop_ws@1.5s, slow:300ms")


class NumberConfig(Strict):
    """The routing context of calls to one number (or a glob of numbers)."""

    tenant: str | None = None
    region: str | None = None
    flags: dict[str, bool] = Field(default_factory=dict)
    description: str | None = None


class StateConfig(Strict):
    """Where limits, breakers and health live: this process (`memory`) or a fleet's shared Redis."""

    backend: Literal["memory", "redis"] = Field("memory", description="`redis` shares state across processes.")
    url: str | None = Field(None, description='Redis URL, e.g. "${REDIS_URL}" or redis://127.0.0.1:6379/0.')
    prefix: str = Field("voicerouter:", description="Key prefix, so several fleets can share one Redis.")
    lease_s: float = Field(15.0, gt=0, description="A session's slots expire this long after its process stops renewing them.")
    timeout_ms: int = Field(50, gt=0, description="Longest wait for Redis on a call's path before local state is used.")
    reserve_s: float = Field(10.0, gt=0, description="A phone call's slots, reserved fleet-wide when its webhook "
                             "answers, expire this long after unless its media stream claims them.")
    max_sessions: int | None = Field(None, gt=0, description="Concurrent sessions across the whole fleet.")


class ServeConfig(Strict):
    """`voicerouter serve`'s settings that travel with the table."""

    auth_token: str | None = Field(
        None, description="Bearer secret that /v1/sessions and POST /v1/tokens require: a ${VAR} reference "
        "(else $VOICEROUTER_AUTH_TOKEN; with neither, /v1/sessions is open).")
    token_ttl_s: int = Field(300, gt=0, le=86400, description="Longest life of a session token minted by POST /v1/tokens.")


class RoutingTableConfig(Strict):
    version: Literal[1] = 1
    providers: dict[str, ProviderConfig]
    defaults: RouteSettings = RouteSettings()
    routes: list[RouteConfig] = Field(default_factory=list)
    numbers: dict[str, NumberConfig] = Field(
        default_factory=dict,
        description="Called number (E.164 like +15551230000, or a glob like +4420*) -> tenant, region, flags "
        "of the call's session; first match in file order wins.",
    )
    faults: list[FaultConfig] = Field(default_factory=list)
    seed: int | None = Field(None, description="Seed for fault injection and jitter.")
    state: StateConfig = Field(default_factory=StateConfig, description="Shared state of a fleet of processes.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="Settings of `voicerouter serve`.")


def json_schema() -> dict[str, Any]:
    schema = RoutingTableConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "voicerouter routing table"
    return schema
