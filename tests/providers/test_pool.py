"""ProviderPool: lazy, cached, shared instances; secrets checked before audio; clear config errors."""

from __future__ import annotations

import pytest

from voicerouter.config.schema import ProviderConfig
from voicerouter.errors import ConfigError, MissingSecretError
from voicerouter.providers.base import BuildContext
from voicerouter.providers.pool import ProviderPool
from voicerouter.testing.server import emulate

ENV = {"OPENAI_API_KEY": "sk-pool-test-key"}


def configs(url: str = "http://127.0.0.1:9/v1") -> dict[str, ProviderConfig]:
    return {
        "oai-stt": ProviderConfig(type="openai", kind="stt", api_key="${OPENAI_API_KEY}", base_url=url),
        "oai-tts": ProviderConfig(type="openai", kind="tts", api_key="${OPENAI_API_KEY}", base_url=url),
        "rt": ProviderConfig(type="openai-realtime", api_key="${RT_KEY}", base_url=url),
        "local-tts": ProviderConfig(type="piper"),
    }


async def test_instances_are_built_lazily_and_shared():
    async with emulate("openai", api_key=ENV["OPENAI_API_KEY"]) as emu:
        pool = ProviderPool(configs(emu.url + "/v1"), BuildContext(env=ENV))
        assert pool.built() == {}
        tts = pool.get("oai-tts")
        assert pool.get("oai-tts") is tts and tts.kind == "tts" and tts.name == "oai-tts"
        assert pool.get("oai-stt") is not tts
        assert set(pool.built()) == {"oai-tts", "oai-stt"}
        chunks = [c async for c in tts.synthesize("shared client")]
        await pool.aclose()
    assert chunks
    assert pool.built() == {}
    assert tts.client.is_closed


def test_kind_is_inferred_from_single_kind_types():
    pool = ProviderPool(configs(), BuildContext(env={"RT_KEY": "k-realtime"}))
    assert pool.kind("rt") == "s2s" and pool.kind("local-tts") == "tts"
    assert pool.get("rt").kind == "s2s"


def test_unknown_type_and_name_are_config_errors():
    pool = ProviderPool({"x": ProviderConfig(type="nosuch")}, BuildContext(env={}))
    with pytest.raises(ConfigError) as info:
        pool.get("x")
    assert "nosuch" in str(info.value)
    with pytest.raises(ConfigError) as info:
        pool.get("y")
    assert "unknown provider 'y'" in str(info.value)


def test_multi_kind_type_needs_kind():
    pool = ProviderPool({"o": ProviderConfig(type="openai", api_key="${OPENAI_API_KEY}")}, BuildContext(env=ENV))
    with pytest.raises(ConfigError) as info:
        pool.get("o")
    assert "set kind" in str(info.value)


def test_check_secrets_names_the_first_missing_variable():
    pool = ProviderPool(configs(), BuildContext(env=ENV))
    pool.check_secrets(["oai-stt", "oai-tts", "local-tts"])  # all present
    with pytest.raises(MissingSecretError) as info:
        pool.check_secrets()
    assert "RT_KEY" in str(info.value) and info.value.provider == "rt"
    assert pool.built() == {}  # nothing was built to find out


def test_missing_secret_at_build_names_provider():
    pool = ProviderPool(configs(), BuildContext(env={}))
    with pytest.raises(MissingSecretError) as info:
        pool.get("oai-stt")
    assert info.value.provider == "oai-stt" and "OPENAI_API_KEY" in str(info.value)
