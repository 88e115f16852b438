"""The openai-chat agent: an OpenAI-compatible `POST {base_url}/chat/completions` writes the reply.

Works against OpenAI itself or any compatible server (vLLM, llama.cpp, Ollama, LM Studio, ...):
the system prompt, the last `max_history` messages and the user's text go out; `choices[0].message.content`
comes back. Errors use OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voicerouter.config.secrets import expand, remember_secret
from voicerouter.errors import ConfigError
from voicerouter.providers.base import BuildContext, Conversation, SessionInfo
from voicerouter.providers.http import malformed
from voicerouter.session.agents import history_before
from voicerouter.session.agents.webhook import checked_url, error_message, post_json, resolve_headers

if TYPE_CHECKING:
    from voicerouter.config.schema import AgentConfig

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"


class OpenAIChatAgent:
    name = "openai-chat"

    def __init__(self, config: AgentConfig, ctx: BuildContext) -> None:
        from voicerouter.providers.http import make_client

        self.base_url = checked_url(
            expand(config.base_url or OPENAI_BASE_URL, ctx.env, what="agent base_url", secret=True), provider=self.name
        ).rstrip("/")
        self.model = config.model or DEFAULT_MODEL
        self.timeout_s = config.timeout_ms / 1000
        self.max_history = config.max_history
        self.system_prompt = config.system_prompt or ctx.extra.get("instructions")
        headers = resolve_headers(config.headers, ctx.env, what="agent openai-chat")
        if config.api_key:
            key = expand(config.api_key, ctx.env, what="agent openai-chat api_key", secret=True)
            remember_secret(key)  # a literal key in the table is still a key
            headers["Authorization"] = f"Bearer {key}"
        elif self.base_url == OPENAI_BASE_URL:
            raise ConfigError(
                "agent openai-chat needs an api_key for api.openai.com",
                hint="set agent.api_key: ${OPENAI_API_KEY} (or base_url for a compatible server without auth)",
            )
        self._client = make_client(self.base_url, headers=headers, timeout_s=self.timeout_s,
                                   connect_timeout_s=self.timeout_s)

    def messages(self, text: str, conversation: Conversation | None) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        if self.system_prompt:
            out.append({"role": "system", "content": self.system_prompt})
        for message in history_before(text, conversation, self.max_history):
            out.append({"role": message.role, "content": message.text})
        out.append({"role": "user", "content": text})
        return out

    def payload(self, text: str, conversation: Conversation | None) -> dict[str, Any]:
        return {"model": self.model, "messages": self.messages(text, conversation)}

    async def reply(self, text: str, conversation: Conversation, session: SessionInfo) -> str:
        data, body = await post_json(
            self._client, "/chat/completions", self.payload(text, conversation),
            provider=self.name, timeout_s=self.timeout_s, message_of=error_message,
        )
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise malformed("no choices[0].message.content", body, provider=self.name) from None
        if not isinstance(content, str):
            raise malformed("choices[0].message.content is not text", body, provider=self.name)
        return content.strip()

    async def aclose(self) -> None:
        await self._client.aclose()
