"""Setup the provider client tests share: build a provider from a table entry, drain, probe and close it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from voicerouter.config.schema import ProviderConfig
from voicerouter.providers.base import AudioChunk, BuildContext


def build(create: Callable[..., Any], type_: str, name: str, url: str | None, kind: str, *, key: str,
          env_var: str, **fields: Any) -> Any:
    """A provider from a routing-table entry whose `api_key` is `${env_var}`, set to `key` in the build env."""
    config = ProviderConfig(type=type_, kind=kind, api_key="${" + env_var + "}", base_url=url, **fields)
    return create(name, kind, config, BuildContext(env={env_var: key}))


async def collect(tts: Any, text: str) -> list[AudioChunk]:
    """Every chunk of one synthesis; the provider is closed afterwards, whatever happens."""
    try:
        return [chunk async for chunk in tts.synthesize(text)]
    finally:
        await tts.aclose()


async def synthesize_into(tts: Any, text: str, got: list[AudioChunk]) -> None:
    """Synthesize `text`, keeping each chunk in `got` as it arrives (what came before a failure stays visible)."""
    async for chunk in tts.synthesize(text):
        got.append(chunk)


async def probe_each(make_kind: Callable[[str], Any], kinds: tuple[str, ...]) -> None:
    """Build one provider per kind, probe it, close it."""
    for kind in kinds:
        provider = make_kind(kind)
        try:
            await provider.probe()
        finally:
            await provider.aclose()


def words_in_common(heard: str, phrase: str) -> int:
    """How many distinct words of `phrase` a recognizer heard (case-insensitive)."""
    return len(set(heard.lower().split()) & set(phrase.split()))
