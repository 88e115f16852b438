"""What the Twilio and Telnyx emulators share: the calls and messages they hold, the background work that
carries a call out, document fetching and status callbacks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from voicerouter.testing.server import EmulatorState

DOCUMENT_TIMEOUT_S = 5.0


@dataclass
class CarrierCalls:
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # call id -> CalleeResult of its media stream
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

    async def fetch_document(self, url: str, params: dict[str, str]) -> str:
        """POST the call's parameters to the document URL and return the TwiML/TeXML it answers."""
        import httpx

        async with httpx.AsyncClient(timeout=DOCUMENT_TIMEOUT_S) as client:
            response = await client.post(url, data=params)
            response.raise_for_status()
            return response.text

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@dataclass
class StatusSender:
    """POSTs status callbacks to one URL: form-encoded and signed (Twilio), or JSON (Telnyx)."""

    url: str | None
    signer: Callable[[str, dict[str, str]], str] | None = None
    json_body: bool = False
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def post(self, params: dict[str, Any]) -> None:
        if not self.url:
            return
        import httpx

        headers: dict[str, str] = {}
        try:
            async with httpx.AsyncClient(timeout=DOCUMENT_TIMEOUT_S) as client:
                if self.json_body:
                    await client.post(self.url, content=json.dumps(params), headers={"Content-Type": "application/json"})
                else:
                    if self.signer is not None:
                        headers["X-Twilio-Signature"] = self.signer(self.url, params)
                    await client.post(self.url, data=params, headers=headers)
            self.sent.append(params)
        except httpx.HTTPError:
            pass  # a carrier does not fail a call because the customer's webhook is down


async def callee_pcm(state: EmulatorState) -> bytes:
    """What the callee says: the state's WAV, else a spoken (piper) or tone phrase, at 8 kHz."""
    from voicerouter.testing.callee import RATE, wav_pcm_8k

    path = getattr(state, "callee_wav", None)
    if path:
        return await asyncio.to_thread(wav_pcm_8k, path)
    return await state.synthesize(state.transcript or "hello", RATE)
