"""The webhook agent: POSTs each turn (transcript, history, route context) to your URL and speaks `reply`.

Request body: {"session_id", "tenant", "region", "route", "flags", "transcript",
"history": [{"role", "text"}, ...]}; the response must be JSON with a string `reply`. When an
earlier agent's reply was cut mid-way, the body also has `partial_reply`: the part of the reply the
caller has heard; `reply` should then be the rest of it (a reply that starts over anyway has its
repeated sentences dropped).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from voicerouter.config.secrets import expand, is_secret_field, redact, remember_secret
from voicerouter.errors import ConfigError, ProviderError, ProviderTimeout
from voicerouter.providers.base import BuildContext, Conversation, SessionInfo
from voicerouter.providers.http import check_base_url, malformed, raise_for_response, transport_error
from voicerouter.session.agents import history_before

if TYPE_CHECKING:
    import httpx

    from voicerouter.config.schema import AgentConfig

SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"})


def resolve_headers(headers: Mapping[str, str], env: Mapping[str, str], *, what: str) -> dict[str, str]:
    """Expand `${VAR}` in header values; every resolved value, and literal credentials, become redactable."""
    resolved: dict[str, str] = {}
    for key, value in headers.items():
        text = expand(value, env, what=f"{what} header {key}", secret=True)
        if key.lower() in SECRET_HEADERS or is_secret_field(key.replace("-", "_")):
            remember_secret(text)
            for word in text.split():  # "Bearer KEY": the key alone may be echoed back
                if len(word) >= 8:
                    remember_secret(word)
        resolved[key] = text
    return resolved


def checked_url(url: str, *, provider: str) -> str:
    """https:// required except on loopback; the URL is kept as written (a webhook path may end in /)."""
    check_base_url(url, provider=provider)  # its message is redacted (the URL may carry a resolved ${TOKEN})
    return url


def error_message(body: bytes) -> str | None:
    """The message of a JSON error body: {"error": "..."}, {"error": {"message": ...}} or {"message": ...}."""
    data = json.loads(body)
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    if isinstance(error, str):
        return error
    message = data.get("message") or data.get("detail")
    return message if isinstance(message, str) else None


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    provider: str,
    timeout_s: float,
    message_of: Callable[[bytes], str | None] = error_message,
) -> tuple[Any, bytes]:
    """POST JSON and return (parsed body, raw body); every failure is a typed ProviderError."""
    import httpx

    try:
        async with asyncio.timeout(timeout_s):
            response = await client.post(url, json=payload)
            await raise_for_response(response, provider=provider, message_of=message_of)
            body = await response.aread()
    except TimeoutError:
        raise ProviderTimeout(f"no reply within {round(timeout_s * 1000)} ms", provider=provider) from None
    except ProviderError:
        raise
    except (httpx.HTTPError, OSError) as exc:
        raise transport_error(exc, provider=provider) from None
    try:
        return json.loads(body), body
    except ValueError:
        raise malformed("not JSON", body, provider=provider) from None


class WebhookAgent:
    name = "webhook"
    continues_replies = True

    def __init__(self, config: AgentConfig, ctx: BuildContext) -> None:
        from voicerouter.providers.http import make_client

        if not config.url:
            raise ConfigError("agent webhook needs a url", hint="set agent.url to your https:// endpoint")
        url = expand(config.url, ctx.env, what="agent url", secret=True)
        self.url = checked_url(url, provider=self.name)
        self.timeout_s = config.timeout_ms / 1000
        self.max_history = config.max_history
        headers = resolve_headers(config.headers, ctx.env, what="agent webhook")
        self._client = make_client("", headers=headers, timeout_s=self.timeout_s, connect_timeout_s=self.timeout_s)

    def payload(
        self, text: str, conversation: Conversation | None, session: SessionInfo, said: str = ""
    ) -> dict[str, Any]:
        body = {
            "session_id": session.session_id,
            "tenant": session.tenant,
            "region": session.region,
            "route": session.route,
            "flags": dict(session.flags),
            "transcript": text,
            "input": _input_of(text, conversation),  # speech, or dtmf when the user typed it on the keypad
            "history": [
                {"role": m.role, "text": m.text} for m in history_before(text, conversation, self.max_history)
            ],
        }
        if said:
            body["partial_reply"] = said
        return body

    async def reply(self, text: str, conversation: Conversation, session: SessionInfo, said: str = "") -> str:
        """The reply; after a cut one (`said`: the part the caller heard), the rest of it."""
        data, body = await post_json(
            self._client, self.url, self.payload(text, conversation, session, said),
            provider=self.name, timeout_s=self.timeout_s,
        )
        reply = data.get("reply") if isinstance(data, dict) else None
        if not isinstance(reply, str):
            raise malformed("no string `reply` field", body, provider=self.name)
        return reply

    async def aclose(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"WebhookAgent({redact(self.url)!r})"


def _input_of(text: str, conversation: Conversation | None) -> str:
    last = conversation.messages[-1] if conversation is not None and conversation.messages else None
    return last.input if last is not None and last.role == "user" and last.text == text else "speech"
