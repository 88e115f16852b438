"""What the Twilio and Telnyx emulators share: the calls and messages they hold, carrying a call out
(fetch the TwiML/TeXML, follow `<Connect><Stream>`, be the callee), and status callbacks.

The callee is the same far end `voicerouter load` uses (`load.answer_stream`): it speaks the callee
WAV into the media stream in real time, plays the replies on its own clock and echoes marks, and its
result (what it heard) is kept per call for tests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from voicerouter.testing.server import EmulatorState

DOCUMENT_TIMEOUT_S = 5.0
CALLEE_LISTEN_S = 30.0  # the callee waits this long for a reply before hanging up (a loaded machine is slow)

Carrier = Literal["twilio", "telnyx"]


@dataclass
class CarrierCalls:
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # call id -> load.CallResult of its media stream
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def start(self, call_id: str, call: dict[str, Any], work: Coroutine[Any, Any, None]) -> None:
        self.calls[call_id] = call
        self.spawn(work)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settle(self, timeout_s: float = 30.0) -> None:
        """Wait for every call and delivery in flight to finish (tests)."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout_s)

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def fetch_document(url: str, params: Mapping[str, str], headers: Mapping[str, str] | None = None,
                         body: bytes | None = None) -> str:
    """POST the call's parameters (form-encoded) to the document URL; the TwiML/TeXML it answers."""
    import httpx

    async with httpx.AsyncClient(timeout=DOCUMENT_TIMEOUT_S) as client:
        if body is not None:
            response = await client.post(url, content=body, headers={
                "Content-Type": "application/x-www-form-urlencoded", **(headers or {})})
        else:
            response = await client.post(url, data=dict(params), headers=dict(headers or {}))
        response.raise_for_status()
        return response.text


def follow(carrier: Carrier, document: str) -> tuple[str | None, dict[str, str], str]:
    """(stream URL, its parameters, first verb) of a TwiML/TeXML document."""
    from voicerouter.transports import telnyx, twilio

    verb, info = (twilio.parse_twiml if carrier == "twilio" else telnyx.parse_texml)(document)
    if verb == "stream":
        return str(info["url"]), dict(info["parameters"]), verb
    return None, {}, verb


async def be_callee(state: EmulatorState, carrier: Carrier, stream_url: str, parameters: dict[str, str],
                    call_id: str) -> Any:
    """Answer the media stream as the callee; the far end's `CallResult`."""
    import aiohttp

    from voicerouter.load import CallPlan, answer_stream

    plan = CallPlan(await callee_pcm(state), name="callee", listen_s=CALLEE_LISTEN_S)
    async with aiohttp.ClientSession() as http:
        return await answer_stream(http, carrier, plan, stream_url, parameters, call_id)


@dataclass
class StatusSender:
    """POSTs status callbacks to one URL: form-encoded and signed (Twilio), or signed JSON (Telnyx)."""

    url: str | None
    headers_for: Callable[[str, dict[str, Any], bytes], dict[str, str]] | None = None
    json_body: bool = False
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def post(self, params: dict[str, Any]) -> None:
        if not self.url:
            return
        from urllib.parse import urlencode

        import httpx

        body = json.dumps(params).encode() if self.json_body else urlencode(params, doseq=True).encode()
        content_type = "application/json" if self.json_body else "application/x-www-form-urlencoded"
        headers = {"Content-Type": content_type}
        if self.headers_for is not None:
            headers.update(self.headers_for(self.url, params, body))
        try:
            async with httpx.AsyncClient(timeout=DOCUMENT_TIMEOUT_S) as client:
                await client.post(self.url, content=body, headers=headers)
            self.sent.append(params)
        except httpx.HTTPError:
            pass  # a carrier does not fail a call because the customer's webhook is down


async def callee_pcm(state: EmulatorState) -> bytes:
    """What the callee says, 16 kHz PCM16: the state's WAV, else a spoken (piper) or tone phrase."""
    path = state.callee_wav
    if path:
        from voicerouter.load import load_fixture

        return (await asyncio.to_thread(load_fixture, path)).pcm
    return await state.synthesize(state.transcript or "hello", 16000)
