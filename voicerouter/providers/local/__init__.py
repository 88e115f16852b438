"""Offline speech engines (Whisper, Moonshine, PocketSphinx STT; Piper TTS) that need no network and no key.

Each engine loads its model once per process and shares it between sessions; the modules import
their engine package lazily, so a missing package surfaces as `EngineMissingError` with the fix.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from voicerouter.errors import PermanentProviderError


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
