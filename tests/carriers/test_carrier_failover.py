"""Carrier failover by error class, for calls and SMS, against the Twilio and Telnyx emulators.

Every test also counts what each emulator created: a call or message must never go out twice.
"""

from __future__ import annotations

import socket

import pytest
from carrier_helpers import ENV, Carriers, table_text

from voicerouter import place_call, send_sms
from voicerouter.config.loader import parse_routes
from voicerouter.session.events import EventBus, EventType
from voicerouter.testing.server import parse_faults

TWIML = "<Response><Say>Your appointment is tomorrow.</Say></Response>"
TO = "+15550111"


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def call(carriers: Carriers, table=None, **kw):
    return await place_call(table or carriers.table(), TO, twiml=TWIML, env=ENV, **kw)


async def sms(carriers: Carriers, table=None, **kw):
    return await send_sms(table or carriers.table(), TO, "Your code is 1234", env=ENV, **kw)


@pytest.mark.parametrize("kind", ["call", "sms"])
async def test_twilio_503_fails_over_to_telnyx_after_a_retry(carriers: Carriers, kind: str):
    carriers.twilio.state.faults = parse_faults("error:503")
    outcome = await (call(carriers) if kind == "call" else sms(carriers))
    assert outcome.ok and outcome.result.carrier == f"tx-{kind}" and outcome.result.carrier_type == "telnyx"
    assert [(a.carrier, a.attempt, a.ok) for a in outcome.attempts] == [
        (f"tw-{kind}", 1, False), (f"tw-{kind}", 2, False), (f"tx-{kind}", 1, True)]
    assert outcome.attempts[0].reason == "transient" and outcome.failovers == 1
    what = "call" if kind == "call" else "message"
    assert carriers.created(carriers.twilio, what) == 0 and carriers.created(carriers.telnyx, what) == 1


@pytest.mark.parametrize("kind", ["call", "sms"])
async def test_twilio_rate_limit_20429_retries_then_takes_it(carriers: Carriers, kind: str):
    carriers.twilio.state.faults = parse_faults("error:20429:0.01*1")
    outcome = await (call(carriers) if kind == "call" else sms(carriers))
    assert outcome.result.carrier == f"tw-{kind}"
    assert [(a.attempt, a.reason, a.code) for a in outcome.attempts] == [(1, "rate_limited", 20429), (2, None, None)]
    assert outcome.failovers == 0


async def test_twilio_auth_error_opens_the_breaker_and_telnyx_takes_the_next_calls(carriers: Carriers):
    table = carriers.table(twilio_token="wrong-token")
    bus = EventBus("s1")
    first = await place_call(table, TO, twiml=TWIML, env=ENV, bus=bus)
    assert first.result.carrier == "tx-call"
    assert [(a.carrier, a.reason, a.code) for a in first.attempts] == [("tw-call", "auth", 20003), ("tx-call", None, None)]
    breaker = [e.to_dict() for e in bus.history if e.type == EventType.BREAKER]
    assert breaker and breaker[0]["state"] == "open" and breaker[0]["provider"] == "tw-call"
    asked = len(carriers.twilio.state.requests)
    for _ in range(3):
        outcome = await place_call(table, TO, twiml=TWIML, env=ENV)
        assert outcome.result.carrier == "tx-call"
        assert [a.carrier for a in outcome.attempts] == ["tx-call"]  # Twilio is not even tried
    assert len(carriers.twilio.state.requests) == asked
    assert carriers.created(carriers.telnyx) == 4 and carriers.created(carriers.twilio) == 0


@pytest.mark.parametrize(("kind", "code"), [("sms", 21408), ("sms", 21606), ("call", 21215)])
async def test_permission_errors_fail_over_and_open_the_breaker(carriers: Carriers, kind: str, code: int):
    carriers.twilio.state.faults = parse_faults(f"error:{code}*1")
    outcome = await (call(carriers) if kind == "call" else sms(carriers))
    assert outcome.result.carrier == f"tx-{kind}"
    assert outcome.attempts[0].reason == "permission" and outcome.attempts[0].code == code
    again = await (call(carriers) if kind == "call" else sms(carriers))
    assert [a.carrier for a in again.attempts] == [f"tx-{kind}"]


@pytest.mark.parametrize(("kind", "code", "reason"), [
    ("sms", 21610, "opted_out"), ("sms", 21614, "bad_recipient"), ("call", 21211, "bad_recipient"),
])
async def test_terminal_twilio_errors_never_fail_over(carriers: Carriers, kind: str, code: int, reason: str):
    carriers.twilio.state.faults = parse_faults(f"error:{code}")
    outcome = await (call(carriers) if kind == "call" else sms(carriers))
    assert not outcome.ok and outcome.error.reason == reason and outcome.error.code == code
    assert outcome.error.fails_over is False and outcome.error.exit_code == 5
    assert [a.carrier for a in outcome.attempts] == [f"tw-{kind}"]  # one attempt, no retry, no failover
    assert not any(r["path"].startswith("/v2") for r in carriers.telnyx.state.requests)
    assert str(code) in outcome.error.message


async def test_opt_out_is_terminal_on_telnyx_too_and_keeps_twilio_closed(carriers: Carriers):
    carriers.telnyx.state.faults = parse_faults("error:40300")
    outcome = await sms(carriers, carriers.table(order=("tx", "tw")))
    assert outcome.error.reason == "opted_out" and outcome.error.code == 40300
    assert carriers.created(carriers.twilio, "message") == 0 and not carriers.twilio.state.requests


@pytest.mark.parametrize("code", [10002, 10016])
async def test_telnyx_invalid_numbers_are_terminal(carriers: Carriers, code: int):
    carriers.telnyx.state.faults = parse_faults(f"error:{code}")
    outcome = await call(carriers, carriers.table(order=("tx", "tw")))
    assert outcome.error.reason == "bad_recipient" and not carriers.twilio.state.requests


async def test_telnyx_auth_10009_and_rate_limit_10011_fail_over_to_twilio(carriers: Carriers):
    carriers.telnyx.state.faults = parse_faults("error:10011:0.01*2,error:10009*1")
    outcome = await sms(carriers, carriers.table(order=("tx", "tw")))
    assert [(a.carrier, a.code) for a in outcome.attempts] == [("tx-sms", 10011), ("tx-sms", 10011), ("tw-sms", None)]
    outcome = await sms(carriers, carriers.table(order=("tx", "tw")))
    assert [(a.carrier, a.reason) for a in outcome.attempts] == [("tx-sms", "auth"), ("tw-sms", None)]


async def test_connection_refused_is_retried_then_failed_over(carriers: Carriers):
    table = parse_routes(table_text(closed_port_url(), carriers.telnyx.url), env=ENV)
    outcome = await call(carriers, table)
    assert outcome.result.carrier == "tx-call"
    assert [a.carrier for a in outcome.attempts] == ["tw-call", "tw-call", "tx-call"]
    assert carriers.created(carriers.telnyx) == 1


@pytest.mark.parametrize("kind", ["call", "sms"])
async def test_twilio_timeout_after_send_checks_status_and_never_dials_twice(carriers: Carriers, kind: str):
    carriers.twilio.state.faults = parse_faults("hang*1")  # the call is created, its answer never comes
    outcome = await (call(carriers, carriers.table(timeout_ms=300)) if kind == "call"
                     else sms(carriers, carriers.table(timeout_ms=300)))
    assert outcome.ok and outcome.result.carrier == f"tw-{kind}" and outcome.result.recovered
    what = "call" if kind == "call" else "message"
    assert carriers.created(carriers.twilio, what) == 1 and carriers.created(carriers.telnyx, what) == 0
    listing = "Calls" if kind == "call" else "Messages"
    paths = [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in carriers.twilio.state.requests if "path" in r]
    assert paths == [("POST", f"{listing}.json"), ("GET", f"{listing}.json"), ("GET", f"{outcome.result.id}.json")]


async def test_twilio_timeout_with_no_status_answer_stops_the_chain(carriers: Carriers):
    carriers.twilio.state.faults = parse_faults("hang")  # and every status check hangs too
    outcome = await call(carriers, carriers.table(timeout_ms=200))
    assert outcome.error.reason == "unknown_outcome" and outcome.error.exit_code == 6
    assert carriers.created(carriers.twilio) == 1 and carriers.created(carriers.telnyx) == 0


async def test_twilio_lost_answer_with_no_call_behind_it_fails_over(carriers: Carriers):
    carriers.twilio.state.faults = parse_faults("error:503*2")  # nothing created...
    table = carriers.table(timeout_ms=300)
    outcome = await call(carriers, table)
    assert outcome.result.carrier == "tx-call" and carriers.created(carriers.twilio) == 0


async def test_telnyx_timeout_after_dial_resends_the_same_command_id(carriers: Carriers):
    carriers.telnyx.state.faults = parse_faults("hang*1")
    outcome = await place_call(carriers.table(order=("tx", "tw"), timeout_ms=300), TO, env=ENV,
                               stream_url="ws://127.0.0.1:9/unused")
    assert outcome.result.carrier == "tx-call" and outcome.result.recovered
    events = [r.get("event") for r in carriers.telnyx.state.requests if r.get("event")]
    assert events == ["call_created", "call_deduplicated"]
    assert not carriers.twilio.state.requests


async def test_telnyx_sms_timeout_after_send_is_never_resent(carriers: Carriers):
    carriers.telnyx.state.faults = parse_faults("hang*1")
    outcome = await sms(carriers, carriers.table(order=("tx", "tw"), timeout_ms=300))
    assert outcome.error.reason == "unknown_outcome"
    assert carriers.created(carriers.telnyx, "message") == 1 and not carriers.twilio.state.requests


async def test_in_process_carrier_faults_use_the_carriers_codes(carriers: Carriers):
    from voicerouter.resilience import parse_faults as inject

    outcome = await sms(carriers, faults=inject("tw-sms=error:21610"))
    assert outcome.error.reason == "opted_out" and not carriers.telnyx.state.requests
    outcome = await sms(carriers, faults=inject("tw-sms=error:503"))
    assert outcome.result.carrier == "tx-sms" and not carriers.twilio.state.requests


@pytest.mark.parametrize("kind", ["call", "sms"])
@pytest.mark.parametrize("fault", ["malformed*1", "truncate*1"])
async def test_a_garbled_2xx_is_a_lost_answer_not_a_failure(carriers: Carriers, kind: str, fault: str):
    # the carrier accepted the request (2xx) but its body cannot be read: retrying or failing over would send twice
    carriers.twilio.state.faults = parse_faults(fault)
    outcome = await (call(carriers) if kind == "call" else sms(carriers))
    assert outcome.ok and outcome.result.carrier == f"tw-{kind}" and outcome.result.recovered
    what = "call" if kind == "call" else "message"
    assert carriers.created(carriers.twilio, what) == 1 and carriers.created(carriers.telnyx, what) == 0


async def test_telnyx_garbled_dial_answer_is_resolved_by_the_same_command_id(carriers: Carriers):
    carriers.telnyx.state.faults = parse_faults("malformed*1")
    outcome = await place_call(carriers.table(order=("tx", "tw")), TO, env=ENV, stream_url="ws://127.0.0.1:9/unused")
    assert outcome.result.carrier == "tx-call" and outcome.result.recovered
    events = [r.get("event") for r in carriers.telnyx.state.requests if r.get("event")]
    assert events == ["call_created", "call_deduplicated"] and not carriers.twilio.state.requests


async def test_telnyx_garbled_message_answer_is_never_resent(carriers: Carriers):
    carriers.telnyx.state.faults = parse_faults("malformed")
    outcome = await sms(carriers, carriers.table(order=("tx", "tw")))
    assert outcome.error.reason == "unknown_outcome"
    assert carriers.created(carriers.telnyx, "message") == 1 and not carriers.twilio.state.requests
