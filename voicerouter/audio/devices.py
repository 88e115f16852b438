"""Live audio through PortAudio (sounddevice): device listing and selection, the microphone as an
`AudioSource` and the speaker as an `AudioSink`.

PortAudio calls our stream callbacks on its own real-time thread. They never block and never
touch asyncio objects directly: captured blocks are handed to the event loop with
`call_soon_threadsafe`, and playback reads from a lock-protected byte buffer, so a barge-in's
`clear()` silences the speaker within one callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from voicerouter.audio.convert import StreamResampler, frame_bytes, rms_dbfs, to_mono_int16
from voicerouter.errors import AudioError, UsageError
from voicerouter.providers.base import PIPELINE_RATE, AudioChunk
from voicerouter.session.events import EventBus, EventType

Direction = Literal["input", "output"]

PORTAUDIO_HINT = "apt-get install libportaudio2 (Debian/Ubuntu), brew install portaudio (macOS)"
# Rates to try, after the preferred ones and the device's own default, when a device rejects a rate.
_FALLBACK_RATES = (48000, 44100, 16000, 22050, 24000, 32000, 8000)
LEVEL_INTERVAL_S = 0.1  # audio_level events: ten a second is smooth enough for a meter
DROP_REPORT_INTERVAL_S = 0.5  # frames_dropped events: at most two a second, with the count since the last
STALL_TIMEOUT_S = 2.0  # a device that delivers or takes nothing this long is considered gone
STALL_GRACE_S = 0.5  # ... unless the capture thread hands over audio within this much more


def sounddevice() -> ModuleType:
    """Import sounddevice; a missing PortAudio library becomes an `AudioError` with the fix."""
    _quiet_alsa()
    try:
        import sounddevice as sd
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise AudioError(f"PortAudio is not installed: {PORTAUDIO_HINT}", hint=str(exc) or None) from None
    return sd


_alsa_handler: Any = None


def _quiet_alsa() -> None:
    """Silence alsa-lib's own stderr chatter ("ALSA lib pcm_dsnoop.c: unable to open slave", ...),
    which PortAudio provokes on most Linux desktops while probing devices. What matters reaches us
    as PortAudio errors anyway; VOICEROUTER_DEBUG=1 keeps the chatter."""
    global _alsa_handler
    if _alsa_handler is not None or not sys.platform.startswith("linux") or os.environ.get("VOICEROUTER_DEBUG"):
        return
    import ctypes
    import ctypes.util

    try:
        asound = ctypes.cdll.LoadLibrary(ctypes.util.find_library("asound") or "libasound.so.2")
    except OSError:
        _alsa_handler = False  # no ALSA: nothing to silence
        return
    # void handler(const char *file, int line, const char *function, int err, const char *fmt, ...)
    handler_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p)
    _alsa_handler = handler_type(lambda *args: None)  # kept referenced: ALSA calls it for the process's life
    asound.snd_lib_error_set_handler(_alsa_handler)


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device, as `voicerouter devices` lists it."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    default_input: bool = False
    default_output: bool = False

    def has(self, direction: Direction) -> bool:
        return (self.max_input_channels if direction == "input" else self.max_output_channels) > 0

    def label(self) -> str:
        return f"[{self.index}] {self.name} ({self.hostapi})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio knows, with the default input and output marked."""
    sd = sounddevice()
    try:
        raw = sd.query_devices()
        hostapis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        raise AudioError(f"cannot list audio devices: {_pa_reason(exc)}") from None
    default_in, default_out = _defaults(sd)
    return [
        DeviceInfo(
            index=int(d["index"]),
            name=str(d["name"]),
            hostapi=str(hostapis[d["hostapi"]]["name"]),
            max_input_channels=int(d["max_input_channels"]),
            max_output_channels=int(d["max_output_channels"]),
            default_samplerate=float(d["default_samplerate"]),
            default_input=int(d["index"]) == default_in,
            default_output=int(d["index"]) == default_out,
        )
        for d in raw
    ]


def _defaults(sd: ModuleType) -> tuple[int, int]:
    try:
        pair = sd.default.device
        default_in, default_out = int(pair[0]), int(pair[1])
    except (TypeError, ValueError, IndexError):
        default_in = default_out = -1
    # sounddevice reports -1 until set explicitly; ask PortAudio for its own defaults then.
    if default_in < 0 or default_out < 0:
        for kind in ("input", "output"):
            with contextlib.suppress(Exception):
                index = int(sd.query_devices(kind=kind)["index"])
                if kind == "input" and default_in < 0:
                    default_in = index
                elif kind == "output" and default_out < 0:
                    default_out = index
    return default_in, default_out


def find_device(spec: str | int | None, direction: Direction, devices: list[DeviceInfo] | None = None) -> DeviceInfo:
    """Pick a device by index, by case-insensitive name substring, or the default (`spec` None).

    An exact (case-insensitive) name wins over substring matches; several substring matches, or
    none, are a `UsageError` listing the candidates.
    """
    devices = list_devices() if devices is None else devices
    usable = [d for d in devices if d.has(direction)]
    flag = f"--{direction}-device"
    if not usable:
        raise AudioError(
            f"no audio {direction} device found",
            hint="connect a microphone" if direction == "input" else "connect speakers or headphones",
        )
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        for device in usable:
            if getattr(device, f"default_{direction}"):
                return device
        return usable[0]
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        for device in devices:
            if device.index == index:
                if not device.has(direction):
                    raise UsageError(
                        f"device {device.label()} has no {direction} channels",
                        hint=f"pick one of: {_candidates(usable)}",
                    )
                return device
        raise UsageError(f"no audio device with index {index}", hint=f"{direction} devices: {_candidates(usable)}")
    needle = text.casefold()
    exact = [d for d in usable if d.name.casefold() == needle]
    if len(exact) == 1:
        return exact[0]
    matches = exact or [d for d in usable if needle in d.name.casefold()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"no {direction} device matches {text!r}", hint=f"{direction} devices: {_candidates(usable)}")
    raise UsageError(
        f"{flag} {text!r} matches {len(matches)} devices: {_candidates(matches)}",
        hint=f"pass the index or a longer part of the name to {flag}",
    )


def _candidates(devices: list[DeviceInfo]) -> str:
    return "; ".join(d.label() for d in devices) or "none"


def _pa_reason(exc: Exception) -> str:
    # PortAudioError args are (message, code[, host error]); the message is what a user can act on.
    args = getattr(exc, "args", ())
    return str(args[0]) if args else str(exc)


def _open_error(device: DeviceInfo, direction: Direction, rate: int, exc: Exception) -> AudioError:
    reason = _pa_reason(exc)
    if "sample rate" in reason.lower():
        return AudioError(
            f"{direction} device {device.label()} rejects {rate} Hz: {reason}",
            hint="pick another device with --" + direction + "-device (see `voicerouter devices`)",
        )
    if "unanticipated host error" in reason.lower() or "device unavailable" in reason.lower():
        hint = "the device is busy or was disconnected; close other audio programs or pick another device"
    else:
        hint = "pick another device with --" + direction + "-device (see `voicerouter devices`)"
    return AudioError(f"cannot open {direction} device {device.label()}: {reason}", hint=hint)


def negotiate(device: DeviceInfo, direction: Direction, preferred: tuple[int, ...]) -> tuple[int, int]:
    """The first (rate, channels) the device accepts for 16-bit audio: rates of `preferred`, then
    the device default, then common rates; mono, else stereo (some hardware has no mono mode)."""
    sd = sounddevice()
    check = sd.check_input_settings if direction == "input" else sd.check_output_settings
    most = device.max_input_channels if direction == "input" else device.max_output_channels
    layouts = [1, 2] if most >= 2 else [1]
    tried: list[int] = []
    for rate in (*preferred, int(device.default_samplerate), *_FALLBACK_RATES):
        if rate <= 0 or rate in tried:
            continue
        tried.append(rate)
        for channels in layouts:
            try:
                check(device=device.index, samplerate=rate, channels=channels, dtype="int16")
            except Exception:  # PortAudioError or ValueError: this format does not work, try the next
                continue
            return rate, channels
    raise AudioError(
        f"{direction} device {device.label()} accepts none of the sample rates "
        f"{', '.join(str(r) for r in tried)} Hz for 16-bit audio",
        hint=f"pick another device with --{direction}-device (see `voicerouter devices`)",
    )


class MicSource:
    """The microphone as an `AudioSource`: 16 kHz mono int16 frames of `frame_ms`, in real time.

    Captures at 16 kHz when the device supports it, else at its default rate, and converts. Blocks
    go from the PortAudio thread to a bounded queue on the event loop; when the consumer falls
    behind, blocks are dropped (never waited for) and reported as `frames_dropped` events. With a
    `bus`, the input level is reported as `audio_level` events (`level_dbfs`, ten a second).
    A device that stops delivering audio (unplugged) ends `frames()` with an `AudioError`.
    """

    realtime = True  # paced by the device clock: the session must not run in lockstep

    def __init__(
        self,
        device: DeviceInfo | str | int | None = None,
        *,
        frame_ms: int = 30,
        bus: EventBus | None = None,
        queue_blocks: int = 100,
        record: bool = False,
    ) -> None:
        if frame_ms <= 0:
            raise ValueError(f"frame_ms must be positive, got {frame_ms}")
        self.device = device if isinstance(device, DeviceInfo) else find_device(device, "input")
        self.sample_rate = PIPELINE_RATE
        self.frame_ms = frame_ms
        self.bus = bus
        self.name = f"mic:{self.device.name}"
        self.device_rate, self.channels = negotiate(self.device, "input", (PIPELINE_RATE,))
        self.blocks_dropped = 0
        self.frames_delivered = 0
        self.recorded = bytearray() if record else None  # the 16 kHz audio delivered, for --out
        self._unreported_drops = 0
        self._drop_reason = "consumer_behind"
        self._drop_report_due = 0.0
        self._queue_blocks = queue_blocks
        self._stream: Any = None
        self._queue: asyncio.Queue[bytes | BaseException | None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"MicSource({self.device.label()}, {self.device_rate} Hz)"

    def open(self) -> None:
        """Open and start the input stream (`frames()` does this itself when needed)."""
        if self._stream is not None:
            return
        sd = sounddevice()
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=self._queue_blocks)
        blocksize = self.device_rate * self.frame_ms // 1000
        try:
            stream = sd.RawInputStream(
                device=self.device.index,
                samplerate=self.device_rate,
                channels=self.channels,
                dtype="int16",
                blocksize=blocksize,
                latency="low",
                callback=self._callback,
                finished_callback=self._finished,
            )
            stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise _open_error(self.device, "input", self.device_rate, exc) from None
        self._stream = stream

    # PortAudio thread: copy and hand over, nothing else.
    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        data = bytes(indata)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(self._put, data, bool(status and status.input_overflow))

    def _finished(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed() and not self._closed:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._put_end)

    def _put(self, data: bytes, overflowed: bool) -> None:
        assert self._queue is not None
        dropped = 1 if overflowed else 0
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            dropped += 1
        if dropped:
            self.blocks_dropped += dropped
            self._unreported_drops += dropped
            self._drop_reason = "overflow" if overflowed else "consumer_behind"
            # One event per interval, not per block: a stalled consumer must not flood the bus.
            if time.monotonic() >= self._drop_report_due:
                self._report_drops()

    def _report_drops(self) -> None:
        if self._unreported_drops and self.bus is not None:
            self.bus.emit(
                EventType.FRAMES_DROPPED,
                dropped=self._unreported_drops,
                total=self.blocks_dropped,
                reason=self._drop_reason,
            )
        self._unreported_drops = 0
        self._drop_report_due = time.monotonic() + DROP_REPORT_INTERVAL_S

    def _put_end(self) -> None:
        if self._closed or self._queue is None:
            return
        error = AudioError(
            f"input device {self.device.label()} stopped (was it disconnected?)",
            hint="reconnect it or pick another device with --input-device",
        )
        try:
            self._queue.put_nowait(error)
        except asyncio.QueueFull:
            # Make room: the error matters more than one more block of audio.
            self._queue.get_nowait()
            self._queue.put_nowait(error)

    async def _next_block(self) -> Any:
        """The next captured block; TimeoutError when the device has delivered nothing for
        STALL_TIMEOUT_S. A process starved of CPU (or of the GIL, by a native engine that holds it)
        wakes up late for everything at once: the capture thread gets a last chance (STALL_GRACE_S)
        to hand over what it has before the device is called gone."""
        assert self._queue is not None
        try:
            async with asyncio.timeout(STALL_TIMEOUT_S):  # not wait_for: it can swallow a cancel on 3.11
                return await self._queue.get()
        except TimeoutError:
            if not self._queue.empty():
                return self._queue.get_nowait()
        async with asyncio.timeout(STALL_GRACE_S):
            return await self._queue.get()

    async def frames(self) -> AsyncIterator[bytes]:
        self.open()
        assert self._queue is not None
        resampler = StreamResampler(self.device_rate, PIPELINE_RATE)
        size = frame_bytes(self.frame_ms, PIPELINE_RATE)
        pending = bytearray()
        level_due = 0.0
        level_pcm = bytearray()
        try:
            while not self._closed:
                try:
                    item = await self._next_block()
                except TimeoutError:
                    if self._closed:
                        return
                    raise AudioError(
                        f"input device {self.device.label()} delivered no audio for {STALL_TIMEOUT_S:.0f} s "
                        "(was it disconnected?)",
                        hint="reconnect it or pick another device with --input-device",
                    ) from None
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                if self.channels > 1:
                    item = to_mono_int16(np.frombuffer(item, dtype="<i2"), self.channels).astype("<i2").tobytes()
                pending += resampler.process(item)
                while len(pending) >= size:
                    frame = bytes(pending[:size])
                    del pending[:size]
                    self.frames_delivered += 1
                    if self.recorded is not None:
                        self.recorded += frame
                    if self.bus is not None:
                        level_pcm += frame
                        now = time.monotonic()
                        if now >= level_due:
                            self.bus.emit(EventType.AUDIO_LEVEL, level_dbfs=round(rms_dbfs(bytes(level_pcm)), 1))
                            level_pcm.clear()
                            level_due = now + LEVEL_INTERVAL_S
                    yield frame
        finally:
            self._report_drops()  # the drops since the last report, before the consumer moves on

    def stop(self) -> None:
        """End `frames()` after the blocks already captured (called from the loop thread)."""
        if self._queue is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)

    async def aclose(self) -> None:
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            await _close_stream(stream)
        self._report_drops()
        if self._queue is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)


CLOSE_TIMEOUT_S = 3.0


def _close_stream_sync(stream: Any) -> None:
    # abort(), not stop(): stop() waits for the callback thread, which a stuck device never releases.
    with contextlib.suppress(Exception):  # a vanished device fails to abort; it is closed either way
        stream.abort()
    with contextlib.suppress(Exception):
        stream.close()


async def _close_stream(stream: Any) -> None:
    """Close a stream off the event loop; give up waiting on a device that hangs (a daemon thread
    is left behind rather than a process that cannot exit)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def work() -> None:
        _close_stream_sync(stream)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    threading.Thread(target=work, name="close-audio-stream", daemon=True).start()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await done
    except TimeoutError:
        _skip_portaudio_shutdown()


def _skip_portaudio_shutdown() -> None:
    # PortAudio's exit handler (Pa_Terminate) would wait forever for the hung stream's thread, so
    # the process could not exit; leave the cleanup to the operating system instead.
    import atexit

    sd = sounddevice()
    handler = getattr(sd, "_exit_handler", None)
    if handler is not None:
        atexit.unregister(handler)


class SpeakerSink:
    """The speaker as an `AudioSink`.

    Reply chunks (any rate) are resampled to the device rate and appended to a buffer that the
    output callback plays from, silence when empty. `clear()` empties the buffer at once, so a
    barge-in stops playback within one callback; `drain()` returns when the buffer has been played
    and the device's own latency has passed. With `record=True` everything played, silence
    included, is kept in `recorded` (interleaved int16 at `device_rate`; `recorded_pcm()` is mono).
    """

    def __init__(
        self,
        device: DeviceInfo | str | int | None = None,
        *,
        bus: EventBus | None = None,
        block_ms: int = 20,
        record: bool = False,
    ) -> None:
        self.device = device if isinstance(device, DeviceInfo) else find_device(device, "output")
        self.bus = bus
        self.name = f"speaker:{self.device.name}"
        self.device_rate, self.channels = negotiate(self.device, "output", ())
        self.block_ms = block_ms
        self.clears = 0
        self.seconds_played = 0.0
        self.recorded = bytearray() if record else None
        self._lock = threading.Lock()
        self._buffer = bytearray()  # int16 mono at device_rate, not yet played
        self._resampler: StreamResampler | None = None
        self._stream: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._emptied: asyncio.Event | None = None
        self._last_callback = 0.0
        self._failed: AudioError | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SpeakerSink({self.device.label()}, {self.device_rate} Hz)"

    def open(self) -> None:
        """Open and start the output stream (the first `write()` does this itself when needed)."""
        if self._stream is not None:
            return
        sd = sounddevice()
        self._loop = asyncio.get_running_loop()
        self._emptied = asyncio.Event()
        self._emptied.set()
        try:
            stream = sd.RawOutputStream(
                device=self.device.index,
                samplerate=self.device_rate,
                channels=self.channels,
                dtype="int16",
                blocksize=self.device_rate * self.block_ms // 1000,
                latency="low",
                callback=self._callback,
                finished_callback=self._finished,
            )
            stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise _open_error(self.device, "output", self.device_rate, exc) from None
        self._last_callback = time.monotonic()
        self._stream = stream

    # PortAudio thread: copy out what is buffered, pad with silence, never wait.
    def _callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        want = len(outdata)
        with self._lock:
            n = min(want, len(self._buffer))
            chunk = bytes(self._buffer[:n])
            del self._buffer[:n]
            emptied = n > 0 and not self._buffer
            if self.recorded is not None:
                # Silence included, so the recording keeps time with the microphone's.
                self.recorded += chunk + bytes(want - n)
        outdata[:n] = chunk
        if n < want:
            outdata[n:] = bytes(want - n)
        self._last_callback = time.monotonic()
        if n:
            self.seconds_played += n / 2 / self.channels / self.device_rate
        if emptied:
            self._notify(self._set_emptied)

    def _finished(self) -> None:
        if not self._closed:
            self._notify(self._set_failed)

    def _notify(self, fn: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn)

    def _set_emptied(self) -> None:
        if self._emptied is not None:
            with self._lock:
                empty = not self._buffer
            if empty:
                self._emptied.set()

    def _set_failed(self) -> None:
        self._failed = AudioError(
            f"output device {self.device.label()} stopped (was it disconnected?)",
            hint="reconnect it or pick another device with --output-device",
        )
        if self._emptied is not None:
            self._emptied.set()

    @property
    def played_s(self) -> float:
        """Seconds of audio the device has taken from the buffer (the `AudioSink` contract)."""
        return self.seconds_played

    @property
    def buffered_s(self) -> float:
        """Seconds of audio queued and not yet handed to the device."""
        with self._lock:
            return len(self._buffer) / 2 / self.channels / self.device_rate

    async def write(self, chunk: AudioChunk) -> None:
        if self._closed:
            raise AudioError(f"output device {self.device.label()} is closed")
        if self._failed is not None:
            raise self._failed
        self.open()
        if not chunk.pcm:
            return
        pcm = self._convert(chunk)
        if not pcm:
            return
        assert self._emptied is not None
        with self._lock:
            self._buffer += pcm
        self._emptied.clear()
        # Yield so the session's other work (VAD on the microphone) keeps running between chunks.
        await asyncio.sleep(0)

    def _convert(self, chunk: AudioChunk) -> bytes:
        return self._widen(self._resample(chunk))

    def _widen(self, pcm: bytes) -> bytes:
        """Mono to the stream's channel count (the same signal on every channel)."""
        if self.channels == 1 or not pcm:
            return pcm
        return np.repeat(np.frombuffer(pcm, dtype="<i2"), self.channels).astype("<i2").tobytes()

    def recorded_pcm(self) -> bytes:
        """What was played (`record=True`), mono int16 at `device_rate`."""
        data = bytes(self.recorded or b"")
        if self.channels == 1:
            return data
        return np.frombuffer(data, dtype="<i2")[:: self.channels].astype("<i2").tobytes()

    def _resample(self, chunk: AudioChunk) -> bytes:
        if chunk.sample_rate == self.device_rate:
            return self._flush_resampler() + chunk.pcm
        if self._resampler is None or self._resampler.src_rate != chunk.sample_rate:
            head = self._flush_resampler()
            self._resampler = StreamResampler(chunk.sample_rate, self.device_rate)
            return head + self._resampler.process(chunk.pcm)
        return self._resampler.process(chunk.pcm)

    def _flush_resampler(self) -> bytes:
        resampler, self._resampler = self._resampler, None
        return resampler.flush() if resampler is not None else b""

    async def drain(self) -> None:
        if self._stream is None:
            return
        tail = self._widen(self._flush_resampler())
        if tail:
            with self._lock:
                self._buffer += tail
        assert self._emptied is not None
        while True:
            with self._lock:
                empty = not self._buffer
            if self._failed is not None:
                raise self._failed
            if empty:
                break
            self._emptied.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STALL_TIMEOUT_S / 4):
                    await self._emptied.wait()
            if time.monotonic() - self._last_callback > STALL_TIMEOUT_S:
                raise AudioError(
                    f"output device {self.device.label()} stopped playing (was it disconnected?)",
                    hint="reconnect it or pick another device with --output-device",
                )
        # What left the buffer is still in the device's own buffers for about its latency.
        latency = float(getattr(self._stream, "latency", 0.0) or 0.0)
        await asyncio.sleep(latency)

    def clear(self) -> None:
        """Drop everything not yet played: the next callback plays silence."""
        self.clears += 1
        self._resampler = None
        with self._lock:
            self._buffer.clear()
        if self._emptied is not None:
            self._emptied.set()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            await _close_stream(stream)

