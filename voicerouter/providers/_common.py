"""What the vendor provider modules share beyond HTTP: the TTS probe, WAV packing, table-entry checks.

One copy each, so every vendor probes, packs uploads and rejects typos in `options` the same way.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from voicerouter.config.schema import ProviderConfig
from voicerouter.config.secrets import expand
from voicerouter.errors import ConfigError, RequestError, TransientProviderError
from voicerouter.providers import http
from voicerouter.providers.base import PIPELINE_RATE, AudioChunk, BuildContext

DEFAULT_TIMEOUT_MS = 30000


def check_options(name: str, vendor: str, config: ProviderConfig, known: Iterable[str]) -> None:
    """A typo in `options` must not silently do nothing: unknown keys fail the build."""
    known = frozenset(known)
    unknown = sorted(set(config.options) - known)
    if unknown:
        raise ConfigError(
            f"provider {name}: unknown {vendor} option(s) {', '.join(unknown)}",
            hint=f"known options: {', '.join(sorted(known))}",
        )


def build_vendor(
    name: str,
    kind: str,
    config: ProviderConfig,
    ctx: BuildContext,
    *,
    vendor: str,
    classes: Mapping[str, Callable[..., Any]],
    options: Iterable[str],
    key_ref: str,
    base_url: str | Callable[[str], str],
) -> Any:
    """The one way a vendor factory builds its provider: kind, options, key, base URL, timeout.

    `classes` maps each kind the vendor offers to its class; `base_url` is the default URL, or a
    function of the kind for vendors whose host depends on it (a `base_url` in the table wins).
    """
    cls = classes.get(kind)
    if cls is None:
        offered = " or ".join(f"kind: {k}" for k in classes)
        raise ConfigError(f"provider {name}: {vendor} has no {kind} kind", hint=f"use {offered}")
    check_options(name, vendor, config, options)
    key = api_key(name, config, ctx, key_ref)
    url = config.base_url or (base_url(kind) if callable(base_url) else base_url)
    checked = http.check_base_url(url, provider=name)
    return cls(name, config, key=key, base_url=checked, timeout_s=timeout_of(config))


def transport_of(name: str, config: ProviderConfig) -> str:
    """`options.transport` of a TTS entry: `http` (one request per sentence, the default) or `websocket`."""
    transport = str(config.options.get("transport", "http"))
    if transport not in ("http", "websocket"):
        raise ConfigError(f"provider {name}: options.transport must be http or websocket, not {transport!r}")
    return transport


def api_key(name: str, config: ProviderConfig, ctx: BuildContext, default_ref: str) -> str:
    """The entry's `api_key`, or the vendor's conventional `${VAR}`, expanded as a secret."""
    return expand(config.api_key or default_ref, ctx.env, what=f"provider {name}", secret=True)


def pcm_rate(name: str, config: ProviderConfig, default: int, rates: Iterable[int], *, what: str) -> int:
    """The entry's `sample_rate` (or the vendor default), refused unless the vendor offers it; `what` says whose."""
    rate = config.sample_rate or default
    if rate not in rates:
        raise ConfigError(
            f"provider {name}: {what} at {rate} Hz", hint=f"sample_rate: one of {', '.join(map(str, rates))}"
        )
    return rate


def timeout_of(config: ProviderConfig) -> float:
    """The entry's request timeout in seconds (`timeout_ms`, 30 s when unset)."""
    return (config.timeout_ms or DEFAULT_TIMEOUT_MS) / 1000


def silence(duration_s: float, sample_rate: int = PIPELINE_RATE) -> AudioChunk:
    """Silent audio: what a batch STT probe sends to prove the key, the model and the route."""
    return AudioChunk(b"\0\0" * int(duration_s * sample_rate), sample_rate)


def batch_only(what: str, *, provider: str) -> RequestError:
    """The error of `open_stream` on a vendor API that only transcribes whole utterances."""
    return RequestError(f"{what} is batch only", provider=provider, hint="use transcribe() for this provider")


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """Mono PCM16 packed as a WAV file, for vendors that take an upload rather than raw PCM."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


async def probe_synthesis(tts: Any, *, what: str) -> None:
    """A one-word synthesis, read to its first audio chunk; `what` names the endpoint in the error."""
    stream = tts.synthesize("Hi.")
    try:
        await anext(stream)
    except StopAsyncIteration:
        raise TransientProviderError(f"{what} returned no audio", provider=tts.name) from None
    finally:
        await stream.aclose()
