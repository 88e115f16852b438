"""Offline speech engines (Whisper, Moonshine, PocketSphinx STT; Piper TTS) that need no network and no key.

Each engine loads its model once per process and shares it between sessions; an engine whose model
is not thread-safe lends copies from a `ModelPool`. The modules import their engine package
lazily, so a missing package surfaces as `EngineMissingError` with the fix.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

from voicerouter.errors import ConfigError, PermanentProviderError, ProviderError, TransientProviderError

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class EngineMissingError(PermanentProviderError):
    """The Python package of a local engine (or its bundled model) is not installed."""

    def __init__(self, engine: str, packages: str, *, provider: str | None = None, cause: str = "") -> None:
        detail = f": {cause}" if cause else ""
        super().__init__(
            f"the {engine} engine is not available{detail}",
            provider=provider,
            hint=f"pip install {packages}",
        )
        self.engine = engine
        self.packages = packages


def engine_error(exc: BaseException, provider: str, failed: str) -> ProviderError | ConfigError:
    """What a failed engine call raises: typed errors keep their type (with the provider named), a
    configuration error stays one, anything else from the engine is transient (`failed` says what)."""
    if isinstance(exc, ProviderError):
        return exc.with_context(provider=provider)
    if isinstance(exc, ConfigError):
        return exc
    return TransientProviderError(f"{failed}: {type(exc).__name__}: {exc}", provider=provider)


def count_from_env(variable: str, noun: str) -> int:
    """A per-process count an engine takes from the environment (at least 1), else one per core, at most 2."""
    value = os.environ.get(variable)
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ConfigError(f"{variable}={value!r} must be a whole number of {noun}") from None
    return max(1, min(2, os.cpu_count() or 1))


def resample_int16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Mono PCM16 from one rate to another (soxr, high quality); returns the input when rates match."""
    if from_rate == to_rate or not pcm:
        return pcm
    import numpy as np
    import soxr

    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
    return soxr.resample(samples, from_rate, to_rate).astype("<i2").tobytes()


# Variables that make Hugging Face and transformers-style loaders refuse to touch the network.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """Load a model with the Hugging Face hub forced offline: engines load by local path only, and
    a library that would fall back to a download fails instead. Variables the user set are kept."""
    added = {key: value for key, value in OFFLINE_ENV.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class LoadedModels(Generic[K, T]):
    """The process's loaded models by key (a path, settings): each is loaded on first use and kept;
    two sessions starting at once never load the same model twice."""

    def __init__(self) -> None:
        self._loaded: dict[K, T] = {}
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        return key in self._loaded

    def get(self, key: K, load: Callable[[], T]) -> T:
        """The model loaded for `key`, calling `load` (once, under the lock) if there is none yet."""
        found = self._loaded.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._loaded.get(key)
            if found is None:
                found = self._loaded[key] = load()
        return found


class ModelPool(Generic[T]):
    """Copies of a model that is not thread-safe, shared by the process's sessions: the first is loaded
    on first use, another only while all are busy (up to `max_size`); a call borrows one and gives it back.

    An engine implements `_load` (one new copy, its load time appended to `load_seconds`).
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.load_seconds: list[float] = []
        self._idle: list[T] = []
        self._created = 0
        self._cond = threading.Condition()

    @property
    def created(self) -> int:
        return self._created

    def _load(self) -> T:
        raise NotImplementedError

    def acquire(self) -> T:
        """Blocking: an idle copy, a new one if the pool may grow, else wait for one to come back."""
        with self._cond:
            while not self._idle and self._created >= self.max_size:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._created += 1
        try:  # load outside the lock so a load never blocks a release
            return self._load()
        except BaseException:
            with self._cond:
                self._created -= 1
                self._cond.notify()
            raise

    def release(self, copy: T) -> None:
        with self._cond:
            self._idle.append(copy)
            self._cond.notify()

    def preload(self) -> float:
        """Make sure one copy (the model) is loaded; returns the seconds that took (0 if it was)."""
        with self._cond:
            if self._created:
                return 0.0
        self.release(self.acquire())
        return self.load_seconds[0] if self.load_seconds else 0.0
