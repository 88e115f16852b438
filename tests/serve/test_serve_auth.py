"""/v1/sessions authentication: the bearer secret, short-lived tokens minted by POST /v1/tokens,
the browser's subprotocol form, and secrets that never show in logs, /status or /metrics."""

from __future__ import annotations

import json
import textwrap

import aiohttp
import pytest
from serve_helpers import HEARD, KEY, SAMPLES, cloud_table, serve

from voicerouter.load import Target, load_fixture, run_load
from voicerouter.routing.validate import validate_file
from voicerouter.serve.auth import AuthError, SessionAuth, credential_of
from voicerouter.testing import emulate

SECRET = "vr-session-secret-canary-5150"


def test_tokens_expire_are_signed_and_carry_a_tenant():
    auth = SessionAuth(SECRET, max_ttl_s=300)
    token, expires = auth.mint(60, "acme", now=1000.0)
    assert expires == 1060 and SECRET not in token
    assert auth.check(token, now=1059.0).tenant == "acme" and auth.check(SECRET).kind == "secret"
    with pytest.raises(AuthError, match="expired"):
        auth.check(token, now=1060.0)
    assert auth.mint(10_000, now=0.0)[1] == 300  # capped at the longest life
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    for bad in (tampered, "vrt1.e30.x", "not-a-token", SECRET + "x", SessionAuth("other-secret-1234").mint()[0]):
        with pytest.raises(AuthError, match="invalid token"):
            auth.check(bad, now=1000.0)
    with pytest.raises(AuthError, match="missing credentials"):
        auth.check(None)
    assert SessionAuth(None).check(None).kind == "open"


def test_credentials_from_the_header_or_a_subprotocol():
    assert credential_of("Bearer abc", None) == "abc" and credential_of("bearer  abc ", None) == "abc"
    assert credential_of("Basic abc", "voicerouter.v1, bearer.xyz") == "xyz"
    assert credential_of(None, "voicerouter.v1") is None and credential_of(None, "bearer.") is None


def test_a_literal_secret_in_the_table_is_a_warning(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 1
        providers:
          local-stt: {{type: pocketsphinx}}
          local-tts: {{type: piper}}
        defaults: {{stt: [local-stt], tts: [local-tts]}}
        serve: {{auth_token: {SECRET}}}
        """))
    findings = validate_file(path, env={})
    assert any(f.code == "literal-secret" and "auth_token" in f.message for f in findings)
    assert SECRET not in json.dumps([str(f) for f in findings])


@pytest.fixture
async def server(tmp_path):
    async with emulate("deepgram", api_key=KEY, transcript=HEARD) as dg, emulate("cartesia", api_key=KEY) as ca:
        table = cloud_table(dg.url, ca.url, 'serve: {auth_token: "${VR_SECRET}", token_ttl_s: 120}\n')
        async with serve(tmp_path, table, env={"VR_SECRET": SECRET}) as running:
            yield running


async def test_sessions_need_a_valid_credential(server):
    ws_url = server.url.replace("http://", "ws://") + "/v1/sessions?tenant=acme"
    async with aiohttp.ClientSession() as http:
        for headers, reason in (({}, "missing credentials"), ({"Authorization": "Bearer wrong"}, "invalid token")):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(ws_url, headers=headers)
            assert refused.value.status == 401
            async with http.get(ws_url, headers=headers) as r:  # the same refusal, readable
                assert r.status == 401 and reason in await r.text() and "Bearer" in r.headers["WWW-Authenticate"]
        report = await run_load(Target(server.url, "ws", tenant="acme", session_token=SECRET),
                                [load_fixture(SAMPLES / "hello.wav")], calls=1, concurrency=1, transcribe=False)
        assert report.count("answered") == 1, [c.error for c in report.calls]
        for path in ("/status", "/metrics"):
            async with http.get(server.url + path) as r:
                assert SECRET not in await r.text()
        async with http.get(server.url + "/status") as r:
            assert (await r.json())["sessions_auth"] == "bearer"
    assert SECRET not in "".join(server.stderr) and "needs a bearer token" in "".join(server.stderr)


async def test_minted_token_opens_its_tenant_from_a_browser_subprotocol(server):
    base = server.url.replace("http://", "ws://") + "/v1/sessions"
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/v1/tokens", json={"tenant": "acme"}) as r:
            assert r.status == 401
        secret = {"Authorization": f"Bearer {SECRET}"}
        async with http.post(server.url + "/v1/tokens", json={"tenant": "acme", "ttl_s": 600}, headers=secret) as r:
            assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
            minted = await r.json()
        assert minted["expires_in"] == 120 and minted["tenant"] == "acme"  # capped at serve.token_ttl_s
        token = minted["token"]
        async with http.post(server.url + "/v1/tokens", json={}, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 401  # a token cannot mint tokens (it would never expire)
        async with http.post(server.url + "/v1/tokens", data="[1]", headers=secret) as r:
            assert r.status == 400
        # A browser offers the protocol and the token as subprotocols; the server selects only the protocol.
        async with http.ws_connect(base + "?rate=16000", protocols=("voicerouter.v1", f"bearer.{token}")) as ws:
            assert ws.protocol == "voicerouter.v1"
            first = json.loads((await ws.receive()).data)
            assert first["type"] == "session" and first["tenant"] == "acme" and first["route"] == "acme"
            await ws.send_str(json.dumps({"type": "stop"}))
        with pytest.raises(aiohttp.WSServerHandshakeError) as other:
            await http.ws_connect(base + "?tenant=globex", protocols=("voicerouter.v1", f"bearer.{token}"))
        assert other.value.status == 403
