"""Which provider types exist, what they can do, and how to build one.

The table is static metadata (no vendor module is imported to validate a routing table); the
factory is a "module:function" string imported only when a session builds the provider.
Third-party packages add types through the `voicerouter.providers` entry-point group, whose
entries point at a `ProviderType`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from voicerouter.errors import ConfigError

if TYPE_CHECKING:
    from voicerouter.config.schema import ProviderConfig
    from voicerouter.providers.base import BuildContext, Kind


@dataclass(frozen=True)
class ProviderType:
    name: str
    kinds: tuple[Kind, ...]
    factory: str  # "module:function(name, kind, config, ctx) -> provider"
    description: str
    env_vars: tuple[str, ...] = ()  # conventional variables for its api_key
    required: tuple[str, ...] = ()  # config fields that must be set
    required_for: dict[str, tuple[str, ...]] = field(default_factory=dict)  # more fields one kind needs
    local: bool = False  # runs offline, no key
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def default_kind(self) -> Kind | None:
        return self.kinds[0] if len(self.kinds) == 1 else None

    def build(self, name: str, kind: Kind, config: ProviderConfig, ctx: BuildContext) -> Any:
        module_name, _, func = self.factory.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, func)(name, kind, config, ctx)


_BUILTIN: tuple[ProviderType, ...] = (
    ProviderType(
        "whisper", ("stt",), "voicerouter.providers.local.whisper:create",
        "Offline Whisper tiny.en STT (CTranslate2 int8, bundled model); partials from Moonshine if asked.",
        local=True,
    ),
    ProviderType(
        "moonshine", ("stt",), "voicerouter.providers.local.moonshine:create",
        "Offline Moonshine tiny-en streaming STT with its bundled model.", local=True,
    ),
    ProviderType(
        "pocketsphinx", ("stt",), "voicerouter.providers.local.pocketsphinx:create",
        "Offline CMU PocketSphinx STT with its bundled en-US model.", local=True,
    ),
    ProviderType(
        "piper", ("tts",), "voicerouter.providers.local.piper:create",
        "Offline Piper neural TTS with the bundled en_US joe voice.", local=True,
    ),
    ProviderType(
        "openai", ("stt", "tts"), "voicerouter.providers.openai:create",
        "OpenAI audio API: /v1/audio/transcriptions and /v1/audio/speech.",
        env_vars=("OPENAI_API_KEY",), required=("api_key",),
    ),
    ProviderType(
        "openai-compatible", ("stt", "tts"), "voicerouter.providers.openai:create_compatible",
        "Any server speaking the OpenAI audio endpoints (self-hosted Whisper, Kokoro, ...).",
        required=("base_url",),
    ),
    ProviderType(
        "openai-realtime", ("s2s",), "voicerouter.providers.openai_realtime:create",
        "OpenAI Realtime API over WebSocket (speech to speech).",
        env_vars=("OPENAI_API_KEY",), required=("api_key",),
    ),
    ProviderType(
        "gemini-live", ("s2s",), "voicerouter.providers.gemini_live:create",
        "Google Gemini Live API (BidiGenerateContent WebSocket, speech to speech).",
        env_vars=("GEMINI_API_KEY",), required=("api_key",),
    ),
    ProviderType(
        "deepgram", ("stt", "tts"), "voicerouter.providers.deepgram:create",
        "Deepgram live /v1/listen WebSocket and /v1/speak (HTTP or the speak WebSocket).",
        env_vars=("DEEPGRAM_API_KEY",), required=("api_key",),
    ),
    ProviderType(
        "assemblyai", ("stt",), "voicerouter.providers.assemblyai:create",
        "AssemblyAI Universal Streaming v3 WebSocket STT.",
        env_vars=("ASSEMBLYAI_API_KEY",), required=("api_key",),
    ),
    ProviderType(
        "elevenlabs", ("tts", "stt"), "voicerouter.providers.elevenlabs:create",
        "ElevenLabs streaming TTS (pcm output, HTTP or stream-input WebSocket) and Scribe STT.",
        env_vars=("ELEVENLABS_API_KEY",), required=("api_key",),
    ),
    ProviderType(
        "cartesia", ("tts",), "voicerouter.providers.cartesia:create",
        "Cartesia TTS: /tts/bytes raw PCM, or the /tts/websocket with contexts.",
        env_vars=("CARTESIA_API_KEY",), required=("api_key",),
    ),
    ProviderType(
        "azure", ("stt", "tts"), "voicerouter.providers.azure:create",
        "Azure Speech REST: short-audio recognition and SSML synthesis.",
        env_vars=("AZURE_SPEECH_KEY",), required=("api_key", "region"),
    ),
    ProviderType(
        "twilio", ("call", "sms"), "voicerouter.providers.twilio:create",
        "Twilio REST 2010-04-01: outbound calls (Calls.json) and SMS (Messages.json).",
        env_vars=("TWILIO_AUTH_TOKEN",), required=("account_sid", "auth_token", "from_number"),
    ),
    ProviderType(
        "telnyx", ("call", "sms"), "voicerouter.providers.telnyx:create",
        "Telnyx API v2: outbound calls (/v2/calls, Call Control) and SMS (/v2/messages).",
        env_vars=("TELNYX_API_KEY",), required=("api_key", "from_number"),
        required_for={"call": ("connection_id",)},
    ),
)


@lru_cache(maxsize=1)
def provider_types() -> dict[str, ProviderType]:
    types = {t.name: t for t in _BUILTIN}
    types.update(_plugin_types())
    return types


def _plugin_types() -> dict[str, ProviderType]:
    from importlib.metadata import entry_points

    found: dict[str, ProviderType] = {}
    for entry in entry_points(group="voicerouter.providers"):
        try:
            value = entry.load()
        except Exception as exc:  # a broken plugin must not break validate
            raise ConfigError(f"provider plugin {entry.name!r} failed to load: {exc}") from None
        if isinstance(value, ProviderType):
            found[value.name] = value
    return found


def get_type(name: str) -> ProviderType | None:
    return provider_types().get(name)
