"""Carrier test helpers: a routing table over both carrier emulators that fails over between them."""

from __future__ import annotations

from dataclasses import dataclass

from voicerouter.config.loader import parse_routes
from voicerouter.routing.table import RoutingTable
from voicerouter.testing.server import Emulator

ENV = {"TWILIO_TOKEN": "test-key", "TELNYX_KEY": "test-key"}


def table_text(twilio_url: str, telnyx_url: str, *, twilio_token: str = "${TWILIO_TOKEN}", timeout_ms: int = 1000,
               order: tuple[str, str] = ("tw", "tx")) -> str:
    call = ", ".join(f"{name}-call" for name in order)
    sms = ", ".join(f"{name}-sms" for name in order)
    carriers = []
    for kind in ("call", "sms"):
        carriers.append(f"""  tw-{kind}:
    type: twilio
    kind: {kind}
    account_sid: AC0123456789abcdef0123456789abcdef
    auth_token: "{twilio_token}"
    from: "+15550100"
    base_url: {twilio_url}
    timeout_ms: {timeout_ms}
  tx-{kind}:
    type: telnyx
    kind: {kind}
    api_key: "${{TELNYX_KEY}}"
    connection_id: "1494404757140276705"
    messaging_profile_id: 4001767e-ce0f-4cae-9d5f-0d5e636e7809
    from: "+15550101"
    base_url: {telnyx_url}/v2
    timeout_ms: {timeout_ms}""")
    return f"""version: 1
providers:
{chr(10).join(carriers)}
defaults:
  call: [{call}]
  sms: [{sms}]
  resilience:
    retries: 1
    backoff: {{base_ms: 5, max_ms: 10}}
    turn_deadline_ms: 8000
    breaker: {{failures: 3, cooldown_s: 60}}
"""


@dataclass
class Carriers:
    twilio: Emulator
    telnyx: Emulator

    def table(self, **kw) -> RoutingTable:
        return parse_routes(table_text(self.twilio.url, self.telnyx.url, **kw), env=ENV)

    def created(self, emu: Emulator, what: str = "call") -> int:
        return sum(1 for r in emu.state.requests if r.get("event") == f"{what}_created")
