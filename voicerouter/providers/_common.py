"""What the vendor provider modules share beyond HTTP: the TTS probe, WAV packing, table-entry checks.

One copy each, so every vendor probes, packs uploads and rejects typos in `options` the same way.
"""

from __future__ import annotations

from typing import Any

from voicerouter.errors import TransientProviderError


async def probe_synthesis(tts: Any, *, what: str) -> None:
    """A one-word synthesis, read to its first audio chunk; `what` names the endpoint in the error."""
    stream = tts.synthesize("Hi.")
    try:
        await anext(stream)
    except StopAsyncIteration:
        raise TransientProviderError(f"{what} returned no audio", provider=tts.name) from None
    finally:
        await stream.aclose()
