"""The offline agent: repeats what it heard, so a full pipeline runs with no network or model."""

from __future__ import annotations

from voicerouter.providers.base import Conversation, SessionInfo

NOTHING_HEARD = "Sorry, I didn't catch that."


class EchoAgent:
    name = "echo"

    async def reply(self, text: str, conversation: Conversation, session: SessionInfo) -> str:
        said = " ".join(text.split())
        if not said:
            return NOTHING_HEARD
        return f"You said: {said}" + ("" if said[-1] in ".?!" else ".")

    async def aclose(self) -> None:
        """Nothing to release."""
