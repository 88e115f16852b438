"""First-audio latency of HTTP TTS vs WebSocket TTS when the agent streams its reply text, on loopback.

The agent's reply arrives a word at a time (an LLM streaming tokens, `--token-ms` apart). HTTP TTS
can only be asked once the first sentence is complete; a WebSocket TTS gets each word as it arrives.
Latency is measured from the first word to the first audio chunk, per vendor (Cartesia contexts,
ElevenLabs stream-input, Deepgram speak) against the emulators, both transports warmed up (pooled
HTTP connection, open socket). The emulators answer at once, so the figures are protocol + client
cost plus the text each transport must wait for, not vendor synthesis time.

Run: python bench/bench_streaming_tts.py [--runs 15] [--token-ms 40]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator

from voicerouter.config.schema import ProviderConfig
from voicerouter.providers.base import BuildContext
from voicerouter.providers.registry import get_type
from voicerouter.providers.websocket import SENTENCE_END
from voicerouter.testing.server import emulate

KEY = "bench-key"
REPLY = "Sure, I can help you with that. Your order shipped yesterday and should arrive on Friday."


def build(vendor: str, url: str, transport: str, **options: str):
    config = ProviderConfig(type=vendor, kind="tts", api_key="${BENCH_KEY}", base_url=url,
                            options={"transport": transport, **options})
    return get_type(vendor).build("bench", "tts", config, BuildContext(env={"BENCH_KEY": KEY}))


async def agent_words(token_s: float, started: list[float]) -> AsyncIterator[str]:
    """The reply as a streaming agent produces it; `started` gets the time of the first word."""
    parts = REPLY.split(" ")
    for index, word in enumerate(parts):
        if index:
            await asyncio.sleep(token_s)
        else:
            started.append(time.perf_counter())
        yield word + (" " if index < len(parts) - 1 else "")


async def http_first_audio(tts, token_s: float) -> float:
    """Wait for the first sentence, then POST it: the time from the first word to the first audio."""
    started: list[float] = []
    sentence = ""
    async for word in agent_words(token_s, started):
        sentence += word
        if SENTENCE_END.search(sentence):
            break
    stream = tts.synthesize(sentence.strip())
    await anext(stream)
    first = time.perf_counter() - started[0]
    await stream.aclose()
    return first


async def socket_first_audio(tts, token_s: float) -> float:
    started: list[float] = []
    stream = tts.synthesize_stream(agent_words(token_s, started))
    await anext(stream)
    first = time.perf_counter() - started[0]
    await stream.aclose()  # barge-in style: the rest is cancelled on the socket
    return first


def ms(samples: list[float]) -> str:
    values = sorted(s * 1000 for s in samples)
    return f"median {statistics.median(values):6.1f} ms  p90 {values[int(len(values) * 0.9)]:6.1f} ms"


async def main(runs: int, token_ms: float) -> None:
    token_s = token_ms / 1000
    words = REPLY.split(" ")
    first_sentence = next(i for i, w in enumerate(words) if SENTENCE_END.search(w)) + 1
    print(f"agent streams a word every {token_ms:g} ms; first sentence = {first_sentence} words "
          f"({(first_sentence - 1) * token_ms:g} ms of text before HTTP TTS can start); {runs} runs each")
    for vendor, options in (("cartesia", {}), ("elevenlabs", {}), ("elevenlabs", {"flush": "clause"}),
                            ("deepgram", {}), ("deepgram", {"flush": "clause"})):
        async with emulate(vendor, api_key=KEY) as emu:
            rest, socket = build(vendor, emu.url, "http"), build(vendor, emu.url, "websocket", **options)
            try:
                await http_first_audio(rest, 0)  # warm: pooled connection
                await socket_first_audio(socket, 0)  # warm: open socket
                http_s = [await http_first_audio(rest, token_s) for _ in range(runs)]
                cpu0 = time.process_time()
                ws_s = [await socket_first_audio(socket, token_s) for _ in range(runs)]
                cpu = (time.process_time() - cpu0) / runs
            finally:
                await rest.aclose()
                await socket.aclose()
        gain = statistics.median(http_s) - statistics.median(ws_s)
        label = vendor + (f" flush={options['flush']}" if options else "")
        print(f"{label:<24} HTTP {ms(http_s)}   WebSocket {ms(ws_s)}   saved {gain * 1000:6.1f} ms"
              f"   (WebSocket CPU {cpu * 1000:.1f} ms per reply)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--token-ms", type=float, default=40.0)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.token_ms))
