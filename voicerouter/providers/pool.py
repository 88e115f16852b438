"""Provider instances by name, built on first use and shared by every session of the process.

One instance per routing-table entry means one HTTP connection pool per provider config, so
keep-alive connections survive across turns and sessions. Secrets are checked up front
(`check_secrets`) so a missing variable fails the session start, before any audio flows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from voicerouter.config.schema import ProviderConfig
from voicerouter.config.secrets import expand, references
from voicerouter.errors import ConfigError, ProviderError, VoiceRouterError
from voicerouter.providers.base import BuildContext, Kind
from voicerouter.providers.registry import ProviderType, get_type


class ProviderPool:
    def __init__(self, providers: Mapping[str, ProviderConfig], ctx: BuildContext) -> None:
        self.configs = dict(providers)
        self.ctx = ctx
        self._instances: dict[str, Any] = {}

    def config(self, name: str) -> ProviderConfig:
        try:
            return self.configs[name]
        except KeyError:
            known = ", ".join(sorted(self.configs)) or "none"
            raise ConfigError(f"unknown provider {name!r}", hint=f"defined providers: {known}") from None

    def provider_type(self, name: str) -> ProviderType:
        cfg = self.config(name)
        ptype = get_type(cfg.type)
        if ptype is None:
            raise ConfigError(f"provider {name}: unknown type {cfg.type!r}",
                              hint="`voicerouter providers` lists the known types")
        return ptype

    def kind(self, name: str) -> Kind:
        cfg, ptype = self.config(name), self.provider_type(name)
        kind = cfg.kind or ptype.default_kind
        if kind is None:
            raise ConfigError(f"provider {name}: type {cfg.type} offers {'/'.join(ptype.kinds)}; set kind")
        if kind not in ptype.kinds:
            raise ConfigError(f"provider {name}: type {cfg.type} has no {kind} (it offers {'/'.join(ptype.kinds)})")
        return kind

    def get(self, name: str) -> Any:
        """The shared instance for `name`, built on first use."""
        instance = self._instances.get(name)
        if instance is None:
            instance = self._instances[name] = self.build(name)
        return instance

    def build(self, name: str) -> Any:
        """A new, unshared instance (the pool does not keep it)."""
        cfg, ptype, kind = self.config(name), self.provider_type(name), self.kind(name)
        if cfg.base_url and references(cfg.base_url):  # a token in the URL is a secret like the key
            cfg = cfg.model_copy(update={"base_url": expand(cfg.base_url, self.ctx.env, what=f"provider {name} base_url", secret=True)})
        try:
            return ptype.build(name, kind, cfg, self.ctx)
        except ProviderError as exc:
            raise exc.with_context(provider=name) from None
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"provider {name}: type {cfg.type} is not available ({exc.name} is missing)",
                hint="install the package that provides it, or use another provider type",
            ) from None

    def built(self) -> dict[str, Any]:
        return dict(self._instances)

    def check_secrets(self, names: Iterable[str] | None = None) -> None:
        """Raise `MissingSecretError` for the first `${VAR}` a provider needs that is unset."""
        for name in self.configs if names is None else names:
            cfg = self.config(name)
            for secret in (cfg.api_key, cfg.auth_token):
                if secret:
                    try:
                        expand(secret, self.ctx.env, what=f"provider {name}", secret=True)
                    except ProviderError as exc:
                        raise exc.with_context(provider=name) from None

    async def preload(self, names: Iterable[str]) -> None:
        """Build these providers and load the heavy local engines now (off the event loop), so the
        first turn is not slow. A provider that cannot be built is left for the session to report."""
        import asyncio

        for name in dict.fromkeys(names):
            try:
                provider = self.get(name)
            except VoiceRouterError:
                continue  # the session reports it (and fails over) when it builds its stages
            load = getattr(provider, "preload", None)
            if callable(load):
                await asyncio.to_thread(load)

    async def aclose(self) -> None:
        """Close every built instance; the first failure is raised after all were tried."""
        instances, self._instances = list(self._instances.values()), {}
        first: BaseException | None = None
        for instance in instances:
            try:
                await instance.aclose()
            except Exception as exc:  # keep closing the others
                first = first or exc
        from voicerouter.providers.closing import settle

        await settle()  # connections its sessions abandoned are closing in the background
        if first is not None:
            raise first

    async def __aenter__(self) -> ProviderPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
