"""voicerouter: route voice sessions to STT, TTS and S2S providers, and outbound calls and SMS to carriers,
by tenant, region, flags and A/B split."""

__version__ = "0.1.0"

import logging as _logging

# Library logging is silent unless the application configures it.
_logging.getLogger("voicerouter").addHandler(_logging.NullHandler())

# The public API: name -> module. Imported lazily so `import voicerouter` stays cheap for the CLI.
_PUBLIC = {
    "load_routes": "voicerouter.config.loader",
    "parse_routes": "voicerouter.config.loader",
    "builtin_routes": "voicerouter.config.loader",
    "RoutingTable": "voicerouter.routing.table",
    "RouteContext": "voicerouter.routing.plan",
    "SessionPlan": "voicerouter.routing.plan",
    "StagePlan": "voicerouter.routing.plan",
    "replay_files": "voicerouter.session.replay",
    "ReplayResult": "voicerouter.session.replay",
    "place_call": "voicerouter.outbound",
    "send_sms": "voicerouter.outbound",
    "VoiceRouterError": "voicerouter.errors",
    "ConfigError": "voicerouter.errors",
    "UsageError": "voicerouter.errors",
    "ProviderError": "voicerouter.errors",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'voicerouter' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return [*__all__, "__version__"]
