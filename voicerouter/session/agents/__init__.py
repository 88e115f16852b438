"""Agents turn a user's transcript into the reply text: `build_agent(config, ctx)` picks one by type.

Conversation contract: the session owns the `Conversation`. It appends the user's message *before*
calling `agent.reply(text, conversation, session)` and the assistant's reply after it returns, so an
agent only reads the history and never writes it. An agent that forwards history treats a trailing
user message equal to `text` as the current turn (sent once, as the new message), which keeps it
correct for callers that do not append first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voicerouter.config.schema import AgentConfig
from voicerouter.errors import ConfigError
from voicerouter.providers.base import Agent, BuildContext, Message

if TYPE_CHECKING:
    from voicerouter.providers.base import Conversation


def build_agent(config: AgentConfig | str, ctx: BuildContext) -> Agent:
    """The agent a route's `agent:` section describes (`echo`, `webhook` or `openai-chat`)."""
    if isinstance(config, str):
        config = AgentConfig(type=config)  # type: ignore[arg-type]
    if config.type == "echo":
        from voicerouter.session.agents.echo import EchoAgent

        return EchoAgent()
    if config.type == "webhook":
        from voicerouter.session.agents.webhook import WebhookAgent

        return WebhookAgent(config, ctx)
    if config.type == "openai-chat":
        from voicerouter.session.agents.openai_chat import OpenAIChatAgent

        return OpenAIChatAgent(config, ctx)
    raise ConfigError(f"unknown agent type {config.type!r}", hint="use echo, webhook or openai-chat")


def build_agents(config: AgentConfig | str, ctx: BuildContext) -> list[Agent]:
    """Every agent of the route's chain, in order, each named by its `name` (or type)."""
    if isinstance(config, str):
        config = AgentConfig(type=config)  # type: ignore[arg-type]
    agents = []
    for entry in config.chain():
        agent = build_agent(entry, ctx)
        if entry.name:
            agent.name = entry.name
        agents.append(agent)
    return agents


def history_before(text: str, conversation: Conversation | None, limit: int | None = None) -> list[Message]:
    """The messages before the current turn (see the contract above), at most the last `limit`."""
    messages = list(conversation.messages) if conversation is not None else []
    if messages and messages[-1].role == "user" and messages[-1].text.strip() == text.strip():
        messages.pop()
    if limit is not None:
        messages = messages[-limit:] if limit > 0 else []
    return messages


__all__ = ["build_agent", "build_agents", "history_before"]
