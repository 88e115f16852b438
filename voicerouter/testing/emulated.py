"""A routing table's cloud providers pointed at local emulators, for offline runs of a real table.

`replay --emulate` uses it: every voice provider the runs need whose type has an emulator gets
one (one emulator per type, on a free loopback port), and a copy of the table points those
providers' `base_url` at it with the emulator's test key. Local engines stay as they are.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from voicerouter.routing.table import RoutingTable
from voicerouter.testing.server import EMULATORS, emulate

KEY_VAR = "VOICEROUTER_EMULATOR_KEY"
TEST_KEY = "test-key"
VOICE_KINDS = ("stt", "tts", "s2s")


@asynccontextmanager
async def emulated_table(
    table: RoutingTable, names: Iterable[str], *, tts_engine: str = "tone", transcript: str | None = None
) -> AsyncIterator[tuple[RoutingTable, dict[str, str], dict[str, str]]]:
    """(the table with `names`' cloud providers on emulators, env with the test key, provider -> URL).

    `transcript=None` makes emulated STT transcribe what it receives (PocketSphinx), so expectations
    on words still mean something.
    """
    from voicerouter.providers.registry import get_type

    chosen = {}
    for name in dict.fromkeys(names):
        cfg = table.config.providers.get(name)
        ptype = get_type(cfg.type) if cfg is not None else None
        if cfg is None or ptype is None or ptype.local or cfg.type not in EMULATORS:
            continue
        kind = cfg.kind or ptype.default_kind
        if kind in VOICE_KINDS:
            chosen[name] = cfg
    async with AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        for type_name in dict.fromkeys(cfg.type for cfg in chosen.values()):
            emu = await stack.enter_async_context(
                emulate(type_name, api_key=TEST_KEY, transcript=transcript, tts_engine=tts_engine)  # type: ignore[arg-type]
            )
            urls[type_name] = emu.url + getattr(importlib.import_module(EMULATORS[type_name]), "BASE_PATH", "")
        providers = dict(table.config.providers)
        for name, cfg in chosen.items():
            providers[name] = cfg.model_copy(update={"base_url": urls[cfg.type], "api_key": "${" + KEY_VAR + "}"})
        config = table.config.model_copy(update={"providers": providers})
        emulated = RoutingTable(config, table.route_settings, table.source)
        yield emulated, {KEY_VAR: TEST_KEY}, {name: urls[cfg.type] for name, cfg in chosen.items()}


def plan_providers(plans: Iterable[Any]) -> list[str]:
    """Every provider the plans' voice stages may use, in order."""
    return list(dict.fromkeys(n for plan in plans for stage in plan.stages() for n in stage.providers))
