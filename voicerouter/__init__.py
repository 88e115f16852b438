"""voicerouter: route voice sessions to STT, TTS and S2S providers, and outbound calls and SMS to carriers,
by tenant, region, flags and A/B split."""

__version__ = "0.1.0"

import logging as _logging

# Library logging is silent unless the application configures it.
_logging.getLogger("voicerouter").addHandler(_logging.NullHandler())


def __getattr__(name: str):
    # The public API, imported lazily so `import voicerouter` stays cheap for the CLI.
    if name in ("load_routes", "parse_routes", "builtin_routes"):
        from voicerouter.config import loader

        return getattr(loader, name)
    if name == "RoutingTable":
        from voicerouter.routing.table import RoutingTable

        return RoutingTable
    if name in ("RouteContext", "SessionPlan", "StagePlan"):
        from voicerouter.routing import plan

        return getattr(plan, name)
    if name in ("place_call", "send_sms"):
        from voicerouter import outbound

        return getattr(outbound, name)
    raise AttributeError(name)
