"""The openai-chat agent: an OpenAI-compatible `POST {base_url}/chat/completions` writes the reply.

Works against OpenAI itself or any compatible server (vLLM, llama.cpp, Ollama, LM Studio, ...):
the system prompt, the last `max_history` messages and the user's text go out; `choices[0].message.content`
comes back. `stream_reply()` asks for `stream: true` and yields the reply as it is written (server-sent
`chat.completion.chunk` events up to `data: [DONE]`), so the session can speak its first sentence early. Errors use OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`.

A reply cut mid-stream is continued (`said`: the part the caller heard): Chat Completions has no
"continue" switch, but it accepts an `assistant` message last, which is how the heard part is sent
(`continuation: assistant`, the default; OpenAI's models usually go on from it, and what they repeat
of it is dropped by the agent stage). Compatible servers that do continue a final assistant message
word for word are asked to: `continuation: prefix` marks it `"prefix": true` (DeepSeek, Mistral),
`continuation: continue_final_message` sends `continue_final_message: true` and
`add_generation_prompt: false` (vLLM). Either way the answer is the rest of the reply.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from voicerouter.config.secrets import expand, remember_secret
from voicerouter.errors import ConfigError, ProviderError, TransientProviderError
from voicerouter.providers.base import BuildContext, Conversation, SessionInfo
from voicerouter.providers.http import malformed, raise_for_response, snippet, transport_error
from voicerouter.session.agents import history_before
from voicerouter.session.agents.webhook import checked_url, error_message, post_json, resolve_headers

if TYPE_CHECKING:
    from voicerouter.config.schema import AgentConfig

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"


class OpenAIChatAgent:
    name = "openai-chat"
    continues_replies = True

    def __init__(self, config: AgentConfig, ctx: BuildContext) -> None:
        from voicerouter.providers.http import make_client

        self.base_url = checked_url(
            expand(config.base_url or OPENAI_BASE_URL, ctx.env, what="agent base_url", secret=True), provider=self.name
        ).rstrip("/")
        self.model = config.model or DEFAULT_MODEL
        self.timeout_s = config.timeout_ms / 1000
        self.max_history = config.max_history
        self.system_prompt = config.system_prompt or ctx.extra.get("instructions")
        self.continuation = config.continuation
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

    def messages(self, text: str, conversation: Conversation | None, said: str = "") -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.system_prompt:
            out.append({"role": "system", "content": self.system_prompt})
        for message in history_before(text, conversation, self.max_history):
            out.append({"role": message.role, "content": message.text})
        out.append({"role": "user", "content": text})
        if said:  # a cut reply to continue: the part the caller heard, as the assistant's last message
            out.append({"role": "assistant", "content": said, **({"prefix": True}
                                                                   if self.continuation == "prefix" else {})})
        return out

    def payload(self, text: str, conversation: Conversation | None, said: str = "") -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "messages": self.messages(text, conversation, said)}
        if said and self.continuation == "continue_final_message":
            payload.update(continue_final_message=True, add_generation_prompt=False)
        return payload

    async def reply(self, text: str, conversation: Conversation, session: SessionInfo, said: str = "") -> str:
        """The whole reply; after a cut one (`said`: the part the caller heard), what follows it."""
        data, body = await post_json(
            self._client, "/chat/completions", self.payload(text, conversation, said),
            provider=self.name, timeout_s=self.timeout_s, message_of=error_message,
        )
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise malformed("no choices[0].message.content", body, provider=self.name) from None
        if not isinstance(content, str):
            raise malformed("choices[0].message.content is not text", body, provider=self.name)
        return content.strip()

    async def stream_reply(
        self, text: str, conversation: Conversation, session: SessionInfo, said: str = ""
    ) -> AsyncIterator[str]:
        """The reply piece by piece as the model writes it (the resilience layer times first piece and
        gaps); after a cut one (`said`: the part the caller heard), what follows it."""
        import httpx

        payload = {**self.payload(text, conversation, said), "stream": True}
        try:
            async with self._client.stream("POST", "/chat/completions", json=payload) as response:
                await raise_for_response(response, provider=self.name, message_of=error_message)
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    yield self._content(await response.aread())  # a server that ignores stream: true
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    piece = self._delta(data)
                    if piece:
                        yield piece
        except ProviderError:
            raise
        except (httpx.HTTPError, OSError) as exc:
            raise transport_error(exc, provider=self.name) from None
        raise TransientProviderError("the reply stream ended before data: [DONE]", provider=self.name)

    def _delta(self, data: str) -> str | None:
        try:
            event = json.loads(data)
        except ValueError:
            raise malformed("stream event is not JSON", data.encode(), provider=self.name) from None
        if not isinstance(event, dict):
            raise malformed("stream event is not an object", data.encode(), provider=self.name)
        if event.get("error"):
            raise TransientProviderError(f"error mid-stream: {snippet(data.encode())}", provider=self.name)
        choices = event.get("choices") or []
        delta = choices[0].get("delta") if choices and isinstance(choices[0], dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        return content if isinstance(content, str) else None

    def _content(self, body: bytes) -> str:
        try:
            content = json.loads(body)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise malformed("no choices[0].message.content", body, provider=self.name) from None
        if not isinstance(content, str):
            raise malformed("choices[0].message.content is not text", body, provider=self.name)
        return content.strip()

    async def aclose(self) -> None:
        await self._client.aclose()
