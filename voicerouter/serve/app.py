"""The `serve` HTTP application: carrier webhooks, media WebSockets, health, status and metrics.

Endpoints (all on one aiohttp app, see `voicerouter.httpserver`):

    POST /twilio/voice   TwiML: <Connect><Stream> to /twilio/media, or <Reject reason="busy"/>
    WS   /twilio/media   Twilio Media Streams
    POST /telnyx/voice   TeXML: <Connect><Stream> to /telnyx/media, or <Reject reason="busy"/>
    WS   /telnyx/media   Telnyx media streaming (bidirectional PCMU)
    WS   /v1/sessions    the generic protocol for apps and the browser page (transports/websocket.py)
    POST /v1/tokens      short-lived session tokens for browsers, when /v1/sessions has a secret (serve/auth.py)
    POST /twilio/status, /telnyx/status   outbound calls' and messages' status callbacks (serve/status.py)
    GET  /               the browser page
    GET  /healthz /readyz /status /metrics

More routes (a carrier's status callbacks, say) are added with `build_app(..., extra_routes=[...])`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from importlib import resources

from aiohttp import WSMsgType, web

from voicerouter.config.secrets import expand, redact, remember_secret
from voicerouter.errors import VoiceRouterError
from voicerouter.serve import metrics
from voicerouter.serve.auth import ENV_VAR, SUBPROTOCOL, AuthError, SessionAuth, credential_of
from voicerouter.serve.calls import CLOSE_POLICY, Attach, CallManager, Outbox
from voicerouter.transports import telnyx, twilio
from voicerouter.transports.base import Started, Transport, WireMessage

log = logging.getLogger("voicerouter.serve")

MANAGER = web.AppKey("manager", CallManager)
SECRETS = web.AppKey("secrets", dict)
AUTH = web.AppKey("auth", SessionAuth)


def carrier_secret(manager: CallManager, carrier: str, option: str, env_var: str) -> str | None:
    """A carrier's webhook secret: the table's `type: <carrier>` provider option (a `${VAR}`), else `env_var`."""
    for name, cfg in manager.table.config.providers.items():
        if cfg.type != carrier:
            continue
        ref = getattr(cfg, option, None) or cfg.options.get(option)
        if ref:
            return expand(str(ref), manager.env, what=f"provider {name} {option}", secret=True)
    return manager.env.get(env_var) or None


def session_auth(manager: CallManager) -> SessionAuth:
    """/v1/sessions' secret: the table's `serve.auth_token` (a `${VAR}`), else $VOICEROUTER_AUTH_TOKEN; none: open."""
    settings = manager.table.config.serve
    secret = None
    if settings.auth_token:
        secret = expand(settings.auth_token, manager.env, what="serve.auth_token", secret=True)
    elif manager.env.get(ENV_VAR):
        secret = manager.env[ENV_VAR]
        remember_secret(secret)
    return SessionAuth(secret, max_ttl_s=settings.token_ttl_s)


def status_routes() -> tuple[web.AbstractRouteDef, ...]:
    from voicerouter.serve.status import ROUTES

    return ROUTES


def build_app(manager: CallManager, *, extra_routes: Iterable[web.AbstractRouteDef] = ()) -> web.Application:
    app = web.Application()
    app[MANAGER] = manager
    app[SECRETS] = {
        "twilio": carrier_secret(manager, "twilio", "auth_token", "TWILIO_AUTH_TOKEN"),
        "telnyx": carrier_secret(manager, "telnyx", "public_key", "TELNYX_PUBLIC_KEY"),
    }
    app[AUTH] = session_auth(manager)
    app.add_routes([
        web.get("/", index),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/status", status),
        web.get("/metrics", metrics_view),
        web.post("/twilio/voice", twilio_voice),
        web.get("/twilio/media", twilio_media),
        web.post("/telnyx/voice", telnyx_voice),
        web.get("/telnyx/media", telnyx_media),
        web.get("/v1/sessions", app_session),
        web.post("/v1/tokens", mint_token),
        *status_routes(),
        *extra_routes,
    ])
    return app


# ---- health, status, metrics -------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    ready, why = request.app[MANAGER].ready()
    return web.json_response({"ready": ready, "reason": why}, status=200 if ready else 503)


async def status(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    data = manager.status()
    data["carriers"] = {
        carrier: "signed" if request.app[SECRETS][carrier] else ("unsigned" if manager.options.allow_unsigned else "off")
        for carrier in ("twilio", "telnyx")
    }
    data["sessions_auth"] = "bearer" if request.app[AUTH].enabled else "open"
    return web.json_response(data)


async def metrics_view(request: web.Request) -> web.Response:
    from voicerouter.resilience.state import snapshot

    breakers = {name: str(info["breaker"]) for name, info in snapshot().items()}
    body = metrics.exposition(breakers)
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


async def index(request: web.Request) -> web.Response:
    page = resources.files("voicerouter.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html")


# ---- carrier webhooks ----------------------------------------------------------------------------


def public_url(request: web.Request) -> str:
    """The URL the carrier called, as it signed it: --public-url + path and query, else the request's own."""
    base = request.app[MANAGER].options.public_url
    if base:
        return base.rstrip("/") + request.path_qs
    return str(request.url)


def media_url(request: web.Request, path: str) -> str:
    """The media WebSocket URL to put in TwiML/TeXML: wss for an https public URL, ws otherwise."""
    base = (request.app[MANAGER].options.public_url or f"{request.scheme}://{request.host}").rstrip("/")
    scheme, _, rest = base.partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest + path


def _carrier_off(request: web.Request, carrier: str) -> web.Response | None:
    manager = request.app[MANAGER]
    if request.app[SECRETS][carrier] is None and not manager.options.allow_unsigned:
        hint = {"twilio": "set TWILIO_AUTH_TOKEN or a twilio provider's auth_token",
                "telnyx": "set TELNYX_PUBLIC_KEY or a telnyx provider's public_key"}[carrier]
        return web.Response(status=404, text=f"{carrier} webhooks are off: {hint} (or serve --allow-unsigned)\n")
    return None


async def twilio_form(request: web.Request) -> dict[str, str] | web.Response:
    """A Twilio webhook's form parameters once its signature checks out, else the response to send."""
    if (off := _carrier_off(request, "twilio")) is not None:
        return off
    form = {k: str(v) for k, v in (await request.post()).items()}
    token = request.app[SECRETS]["twilio"]
    if token is not None and not twilio.signature_valid(
        token, public_url(request), form, request.headers.get(twilio.SIGNATURE_HEADER)
    ):
        return web.Response(status=403, text="invalid X-Twilio-Signature\n")
    return form


async def telnyx_body(request: web.Request) -> bytes | web.Response:
    """A Telnyx webhook's raw body once its Ed25519 signature checks out, else the response to send."""
    if (off := _carrier_off(request, "telnyx")) is not None:
        return off
    body = await request.read()
    key = request.app[SECRETS]["telnyx"]
    if key is not None and not telnyx.signature_valid(
        key, body, request.headers.get(telnyx.SIGNATURE_HEADER), request.headers.get(telnyx.TIMESTAMP_HEADER)
    ):
        return web.Response(status=403, text="invalid telnyx-signature-ed25519\n")
    return body


async def twilio_voice(request: web.Request) -> web.Response:
    form = await twilio_form(request)
    if isinstance(form, web.Response):
        return form
    call_id = form.get("CallSid") or ""
    if not call_id:
        return web.Response(status=400, text="CallSid is missing\n")
    answer = await _answer_call(request, call_id, form.get("To"))
    if answer is None:
        return _xml(twilio.reject_twiml("busy"))
    return _xml(twilio.connect_stream_twiml(media_url(request, "/twilio/media"), answer))


async def telnyx_voice(request: web.Request) -> web.Response:
    body = await telnyx_body(request)
    if isinstance(body, web.Response):
        return body
    form = telnyx.webhook_params(body, request.content_type)
    call_id = form.get("CallSid") or ""
    if not call_id:
        return web.Response(status=400, text="CallSid is missing\n")
    answer = await _answer_call(request, call_id, form.get("To"))
    if answer is None:
        return _xml(telnyx.reject_texml("busy"))
    # Telnyx's start frame names the call by call_control_id: the CallSid rides in the stream URL.
    return _xml(telnyx.connect_stream_texml(media_url(request, "/telnyx/media"), {**answer, "call": call_id}))


async def _answer_call(request: web.Request, call_id: str, to: str | None) -> dict[str, str] | None:
    """The stream parameters for an admitted call (routing context), or None when it is refused."""
    manager = request.app[MANAGER]
    query = dict(request.query)
    if request.query.getall("flag", []):
        query["flags"] = ",".join(request.query.getall("flag"))
    ctx = manager.context(to, query)
    plan = manager.plan_for(ctx, call_id)
    if await manager.admit_call(call_id, plan) is not None:
        return None
    params = {"tenant": ctx.tenant or "", "region": ctx.region or "",
              "flags": ",".join(f"{k}={'true' if v else 'false'}" for k, v in sorted(ctx.flags.items()))}
    if to:
        params["to"] = to
    return {k: v for k, v in params.items() if v}


def _xml(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/xml")


# ---- media WebSockets ----------------------------------------------------------------------------


async def twilio_media(request: web.Request) -> web.StreamResponse:
    return await _media(request, twilio.TwilioMedia())


async def telnyx_media(request: web.Request) -> web.StreamResponse:
    return await _media(request, telnyx.TelnyxMedia(dict(request.query)))


async def app_session(request: web.Request) -> web.StreamResponse:
    from dataclasses import replace

    from voicerouter.transports.websocket import AppSocket

    auth = request.app[AUTH]
    try:
        grant = auth.check(credential_of(request.headers.get("Authorization"),
                                         request.headers.get("Sec-WebSocket-Protocol")))
    except AuthError as exc:
        return _unauthorized(str(exc))
    transport = AppSocket()
    try:
        started = transport.start_from_query(request.query)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    if grant.tenant is not None:
        asked = started.params.get("tenant")
        if asked and asked != grant.tenant:
            return web.Response(status=403, text="this token opens sessions of another tenant only\n")
        started = replace(started, params={**started.params, "tenant": grant.tenant})
    return await _media(request, transport, started=started, attach=transport.attach, protocols=(SUBPROTOCOL,))


async def mint_token(request: web.Request) -> web.Response:
    """POST /v1/tokens (with the secret as bearer): a short-lived session token, e.g. for a browser."""
    auth = request.app[AUTH]
    if not auth.enabled:
        return web.Response(status=404, text=f"/v1/sessions has no authentication (set serve.auth_token or {ENV_VAR})\n")
    credential = credential_of(request.headers.get("Authorization"), None)
    if credential is None or not auth.is_secret(credential):
        return _unauthorized("minting a token needs 'Authorization: Bearer <the server secret>'")
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        return web.Response(status=400, text="the body must be JSON: {\"ttl_s\": 300, \"tenant\": \"acme\"}\n")
    if not isinstance(body, dict):
        return web.Response(status=400, text="the body must be a JSON object\n")
    ttl, tenant = body.get("ttl_s"), body.get("tenant")
    if (ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int))) or (
            tenant is not None and not isinstance(tenant, str)):
        return web.Response(status=400, text="ttl_s must be an integer and tenant a string\n")
    try:
        token, expires = auth.mint(ttl, tenant)
    except AuthError as exc:
        return web.Response(status=400, text=f"{exc}\n")
    return web.json_response({"token": token, "expires_at": expires, "expires_in": min(ttl or auth.max_ttl_s, auth.max_ttl_s),
                              "tenant": tenant}, headers={"Cache-Control": "no-store"})


def _unauthorized(reason: str) -> web.Response:
    return web.Response(status=401, text=f"unauthorized: {reason}\n", headers={
        "WWW-Authenticate": 'Bearer realm="voicerouter", error="invalid_token"', "Cache-Control": "no-store"})


async def _media(request: web.Request, transport: Transport, *, started: Started | None = None,
                 attach: Attach | None = None, protocols: tuple[str, ...] = ()) -> web.StreamResponse:
    manager = request.app[MANAGER]
    ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20, protocols=protocols)
    await ws.prepare(request)

    async def receive() -> WireMessage | None:
        message = await ws.receive()
        if message.type == WSMsgType.TEXT:
            return str(message.data)
        if message.type == WSMsgType.BINARY:
            return bytes(message.data)
        return None

    async def send(message: WireMessage) -> None:
        if ws.closed:
            raise ConnectionError("websocket closed")
        if isinstance(message, bytes):
            await ws.send_bytes(message)
        else:
            await ws.send_str(message)

    async def close(code: int, reason: str) -> None:
        if not ws.closed:
            await ws.close(code=code, message=reason.encode()[:120])

    outbox = Outbox(send)
    try:
        await manager.run_stream(transport, receive, outbox, close, started=started, attach=attach)
    except VoiceRouterError as exc:
        await close(CLOSE_POLICY, redact(exc.message))
    finally:
        await outbox.flush(0.5)
        with contextlib.suppress(Exception):
            await close(1000, "done")
    return ws
