"""One fault grammar for `replay --inject`, the table's `faults:` and the emulators' `--fault`/`faults=`."""

from __future__ import annotations

import pytest

from voicerouter.errors import UsageError
from voicerouter.resilience.faults import parse_entry, parse_faults
from voicerouter.testing.server import Fault as ServerFault


@pytest.mark.parametrize("spec", ["error:503*2@0.5", "error:503@0.5*2"])
def test_triggers_in_any_order_on_both_sides(spec):
    client = parse_entry(f"dg={spec}")
    server = ServerFault.parse(spec)
    assert (client.status, client.times, client.probability) == (503, 2, 0.5)
    assert (server.status, server.times, server.probability) == (503, 2, 0.5)


def test_the_same_spec_means_the_same_on_both_sides():
    assert parse_entry("dg=drop:0.5s").at_s == parse_entry("dg=drop@0.5s").at_s == 0.5
    assert ServerFault.parse("drop:0.5s").seconds == ServerFault.parse("drop@0.5s").seconds == 0.5
    assert ServerFault.parse("drop_ws@1.5s").kind == "drop"
    assert parse_entry("dg=error:429:1500ms").retry_after_s == 1.5
    assert ServerFault.parse("error:429:1500ms").retry_after == "1500ms"  # OpenAI's retry-after-ms
    assert parse_entry("dg=slow:300ms").delay_s == ServerFault.parse("slow:300ms").seconds == 0.3


def test_what_only_one_side_can_do_is_refused_with_the_way_to_do_it():
    with pytest.raises(UsageError) as client:
        parse_faults("dg=malformed")
    assert "only a server" in client.value.message and "emulate --fault" in (client.value.hint or "")
    with pytest.raises(UsageError) as server:
        ServerFault.parse("hang@turn2")
    assert "does not know turns" in server.value.message and "replay --inject" in (server.value.hint or "")
    with pytest.raises(UsageError) as bad:
        ServerFault.parse("error:abc")
    assert bad.value.message.startswith("bad emulator fault 'error:abc'")
