"""Agents against real loopback servers: echo, webhook and openai-chat, their errors and secret handling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

import pytest
from aiohttp import web

from voicerouter.config.schema import AgentConfig
from voicerouter.errors import (
    AuthError,
    ConfigError,
    MissingSecretError,
    ProviderTimeout,
    RateLimitedError,
    TransientProviderError,
)
from voicerouter.providers.base import BuildContext, Conversation, SessionInfo
from voicerouter.session.agents import build_agent
from voicerouter.testing import emulate

SESSION = SessionInfo("sess-1", tenant="acme", region="eu-west-1", route="acme-eu", flags={"beta": True})
HOOK_TOKEN = "hook-token-5f2c9e1a7b"


def make(config: dict, env: dict[str, str] | None = None):
    return build_agent(AgentConfig(**config), BuildContext(env=env or {}, session=SESSION))


def conversation(*turns: tuple[str, str]) -> Conversation:
    conv = Conversation()
    for role, text in turns:
        conv.add(role, text)  # type: ignore[arg-type]
    return conv


# --- echo ---------------------------------------------------------------------------------------


async def test_echo_repeats_and_prompts_on_silence():
    agent = build_agent("echo", BuildContext(env={}))  # the `agent: echo` shorthand
    assert await agent.reply("check my order", Conversation(), SESSION) == "You said: check my order."
    assert await agent.reply("is it open?", Conversation(), SESSION) == "You said: is it open?"
    assert await agent.reply("  ", Conversation(), SESSION) == "Sorry, I didn't catch that."
    await agent.aclose()


def test_unknown_agent_type_is_a_config_error():
    # The schema rejects it; a config built around validation still gets a typed error, not a KeyError.
    with pytest.raises(ConfigError, match="unknown agent type"):
        build_agent(AgentConfig.model_construct(type="telepathy"), BuildContext(env={}))


# --- webhook ------------------------------------------------------------------------------------


async def test_webhook_posts_context_and_history_and_speaks_reply():
    async with emulate("webhook") as emu:
        agent = make(
            {"type": "webhook", "url": emu.url + "/hooks/voice", "headers": {"X-Hook-Token": "${HOOK_TOKEN}"}},
            env={"HOOK_TOKEN": HOOK_TOKEN},
        )
        # The session appends the user's message before asking the agent (see the agents contract).
        conv = conversation(("user", "hi"), ("assistant", "You said: hi."), ("user", "my balance please"))
        async with aclosing(agent):
            reply = await agent.reply("my balance please", conv, SESSION)
    assert reply == "You said: my balance please"
    [request] = emu.state.requests
    assert request["path"] == "/hooks/voice"
    assert request["headers"]["X-Hook-Token"] == HOOK_TOKEN
    assert request["body"] == {
        "session_id": "sess-1", "tenant": "acme", "region": "eu-west-1", "route": "acme-eu",
        "flags": {"beta": True}, "transcript": "my balance please", "input": "speech",
        "history": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "You said: hi."}],
    }


async def test_webhook_configured_reply_and_history_limit():
    async with emulate("webhook") as emu:
        emu.state.reply = "Your balance is twelve dollars."  # type: ignore[attr-defined]
        agent = make({"type": "webhook", "url": emu.url, "max_history": 1})
        conv = conversation(("user", "a"), ("assistant", "b"), ("user", "c"))
        async with aclosing(agent):
            assert await agent.reply("balance", conv, SESSION) == "Your balance is twelve dollars."
    assert emu.state.requests[0]["body"]["history"] == [{"role": "user", "text": "c"}]


async def test_webhook_hang_is_a_timeout():
    async with emulate("webhook", faults="hang") as emu:
        async with aclosing(make({"type": "webhook", "url": emu.url, "timeout_ms": 300})) as agent:
            with pytest.raises(ProviderTimeout) as info:
                await agent.reply("hello", Conversation(), SESSION)
    assert "300 ms" in str(info.value) and info.value.provider == "webhook"


async def test_webhook_500_is_transient_and_names_status():
    async with emulate("webhook", faults="error:500") as emu:
        async with aclosing(make({"type": "webhook", "url": emu.url})) as agent:
            with pytest.raises(TransientProviderError) as info:
                await agent.reply("hello", Conversation(), SESSION)
    assert info.value.status == 500 and info.value.retryable


async def test_webhook_malformed_json_is_transient_with_snippet():
    async with emulate("webhook", faults="malformed") as emu:
        async with aclosing(make({"type": "webhook", "url": emu.url})) as agent:
            with pytest.raises(TransientProviderError) as info:
                await agent.reply("hello", Conversation(), SESSION)
    assert "not JSON" in str(info.value) and "half a json" in str(info.value)


@asynccontextmanager
async def serve(handler) -> AsyncIterator[str]:
    """A one-route loopback server for answers the webhook emulator does not give."""
    app = web.Application()
    app.router.add_post("/{path:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_webhook_without_string_reply_is_malformed_and_redacted():
    async def no_reply(request: web.Request) -> web.Response:
        return web.json_response({"answer": f"token was {request.headers['Authorization']}"})

    async with serve(no_reply) as url:
        agent = make(
            {"type": "webhook", "url": url, "headers": {"Authorization": "Bearer ${HOOK_TOKEN}"}},
            env={"HOOK_TOKEN": HOOK_TOKEN},
        )
        async with aclosing(agent):
            with pytest.raises(TransientProviderError) as info:
                await agent.reply("hello", Conversation(), SESSION)
    text = str(info.value)
    assert "no string `reply`" in text and "token was ***" in text  # snippet shown, secret masked
    assert HOOK_TOKEN not in text


async def test_webhook_secret_header_expanded_and_never_in_errors():
    async def echo_auth(request: web.Request) -> web.Response:
        return web.json_response({"error": f"key {request.headers.get('X-Api-Key')} is revoked"}, status=403)

    async with serve(echo_auth) as url:
        agent = make({"type": "webhook", "url": url, "headers": {"X-Api-Key": "${HOOK_TOKEN}"}},
                     env={"HOOK_TOKEN": HOOK_TOKEN})
        async with aclosing(agent):
            with pytest.raises(AuthError) as info:
                await agent.reply("hello", Conversation(), SESSION)
    assert info.value.status == 403 and "is revoked" in str(info.value)  # the header did arrive, expanded
    assert HOOK_TOKEN not in str(info.value) and HOOK_TOKEN not in repr(agent)


def test_webhook_missing_secret_and_plain_http_are_refused():
    with pytest.raises(MissingSecretError, match="HOOK_TOKEN"):
        make({"type": "webhook", "url": "https://hooks.example.com/v", "headers": {"X-Token": "${HOOK_TOKEN}"}})
    with pytest.raises(ConfigError, match="non-loopback"):
        make({"type": "webhook", "url": "http://hooks.example.com/v"})
    with pytest.raises(ConfigError, match="needs a url"):
        make({"type": "webhook"})


# --- openai-chat --------------------------------------------------------------------------------

CHAT_KEY = "sk-chat-test-8d7e6f5a4b"


async def test_openai_chat_sends_system_history_and_user_text():
    async with emulate("openai-chat", api_key=CHAT_KEY) as emu:
        agent = make(
            {"type": "openai-chat", "base_url": emu.url + "/v1", "model": "gpt-4o-mini", "api_key": "${CHAT_KEY}",
             "system_prompt": "You are a bank assistant.", "max_history": 2},
            env={"CHAT_KEY": CHAT_KEY},
        )
        conv = conversation(("user", "hi"), ("assistant", "Hello!"), ("user", "account one two"),
                            ("assistant", "Got it."), ("user", "my balance please"))
        async with aclosing(agent):
            reply = await agent.reply("my balance please", conv, SESSION)
    assert reply == "You said: my balance please"
    [request] = emu.state.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {CHAT_KEY}"
    assert request["body"]["model"] == "gpt-4o-mini"
    assert request["body"]["messages"] == [
        {"role": "system", "content": "You are a bank assistant."},
        {"role": "user", "content": "account one two"},
        {"role": "assistant", "content": "Got it."},
        {"role": "user", "content": "my balance please"},
    ]


async def test_openai_chat_configured_reply_without_prefix_path():
    async with emulate("openai-chat", api_key=CHAT_KEY) as emu:
        emu.state.reply = "Your balance is twelve dollars."  # type: ignore[attr-defined]
        async with aclosing(make({"type": "openai-chat", "base_url": emu.url, "api_key": CHAT_KEY})) as agent:
            assert await agent.reply("balance", Conversation(), SESSION) == "Your balance is twelve dollars."
    assert emu.state.requests[0]["path"] == "/chat/completions"


async def test_openai_chat_wrong_key_is_auth_error_without_the_key():
    wrong = "sk-wrong-key-1234567890"
    async with emulate("openai-chat", api_key=CHAT_KEY) as emu:
        async with aclosing(make({"type": "openai-chat", "base_url": emu.url + "/v1", "api_key": "${K}"}, env={"K": wrong})) as agent:
            with pytest.raises(AuthError) as info:
                await agent.reply("hello", Conversation(), SESSION)
    assert info.value.status == 401 and "Incorrect API key" in str(info.value)
    assert wrong not in str(info.value)  # the emulator echoes the key whole; the error must not


async def test_openai_chat_429_carries_retry_after():
    async with emulate("openai-chat", api_key=CHAT_KEY, faults="error:429:3*1") as emu:
        async with aclosing(make({"type": "openai-chat", "base_url": emu.url + "/v1", "api_key": "${K}"}, env={"K": CHAT_KEY})) as agent:
            with pytest.raises(RateLimitedError) as info:
                await agent.reply("hello", Conversation(), SESSION)
            # The fault applied once; the next turn goes through.
            assert await agent.reply("hello again", Conversation(), SESSION) == "You said: hello again"
    assert info.value.retry_after == 3.0 and "Rate limit" in str(info.value)


async def test_openai_chat_emulator_rejects_bad_body():
    async with emulate("openai-chat", api_key=CHAT_KEY) as emu:
        import httpx

        async with httpx.AsyncClient() as client:
            response = await client.post(
                emu.url + "/v1/chat/completions", json={"model": "m", "messages": []},
                headers={"Authorization": f"Bearer {CHAT_KEY}"},
            )
    assert response.status_code == 400 and "too short" in response.json()["error"]["message"]


def test_openai_chat_needs_a_key_for_openai():
    with pytest.raises(ConfigError, match="api_key"):
        make({"type": "openai-chat"})


async def test_openai_chat_malformed_and_hang_are_transient():
    async with emulate("openai-chat", api_key=CHAT_KEY, faults=["malformed*1", "hang*1"]) as emu:
        async with aclosing(make({"type": "openai-chat", "base_url": emu.url + "/v1", "api_key": CHAT_KEY, "timeout_ms": 300})) as agent:
            with pytest.raises(TransientProviderError, match="not JSON"):
                await agent.reply("hello", Conversation(), SESSION)
            with pytest.raises(ProviderTimeout, match="300 ms"):
                await agent.reply("hello", Conversation(), SESSION)
