"""The offline agent: repeats what it heard, so a full pipeline runs with no network or model."""

from __future__ import annotations

from voicerouter.providers.base import Conversation, SessionInfo
from voicerouter.resilience.continuation import continue_after

NOTHING_HEARD = "Sorry, I didn't catch that."


class EchoAgent:
    name = "echo"
    continues_replies = True

    async def reply(self, text: str, conversation: Conversation, session: SessionInfo, said: str = "") -> str:
        """The echo; after a cut reply (`said`: the part the caller heard), only what it does not repeat."""
        heard = " ".join(text.split())
        reply = f"You said: {heard}" + ("" if heard[-1] in ".?!" else ".") if heard else NOTHING_HEARD
        return continue_after(said, reply) if said else reply

    async def aclose(self) -> None:
        """Nothing to release."""
