"""Carrier failover fault matrix: each error class x call/SMS, Twilio first and Telnyx second, on the emulators.

For every cell it places N calls (or messages) through `place_call` / `send_sms` with the primary
carrier misbehaving as the class says, and counts: placements that went out, the carrier that took
them, attempts and failovers per placement, duplicates (a placement that created more than one call
or message across both carriers: must be 0), and the time to a placed call (median, p95; wall clock
on loopback, so it mostly measures retries, backoff and timeouts; the carriers' clients are built once per cell, as an application passing `pool=` does). Breaker state carries over within a cell (as in a live process: after the first few
failures the breaker skips Twilio) and is reset between cells; counted faults (`*1`) strike every
placement. `cpu ms` is this process's CPU time per placement (client and both emulators), steadier than
wall time on a busy machine.

Run: python bench/bench_carriers.py [--n 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voicerouter import place_call, resilience, send_sms  # noqa: E402
from voicerouter.config.loader import parse_routes  # noqa: E402
from voicerouter.providers.base import BuildContext  # noqa: E402
from voicerouter.providers.pool import ProviderPool  # noqa: E402
from voicerouter.testing.server import emulate, parse_faults  # noqa: E402

ENV = {"TW_TOKEN": "test-key", "TX_KEY": "test-key"}
TO = "+15550111"

# class -> (twilio emulator fault for calls, for SMS, what the class should do); None: a closed port
CLASSES: dict[str, tuple[str | None, str | None, str]] = {
    "healthy": ("", "", "first carrier"),
    "network (refused)": (None, None, "retry, fail over"),
    "5xx (503)": ("error:503", "error:503", "retry, fail over"),
    "429 (20429, once)": ("error:20429:0.05*1", "error:20429:0.05*1", "retry, same carrier"),
    "concurrency (10004)": ("error:10004", "error:10004", "retry, fail over"),
    "auth (20003)": ("error:20003", "error:20003", "fail over, breaker opens"),
    "permission (21215/21408)": ("error:21215", "error:21408", "fail over, breaker opens"),
    "invalid number (21211)": ("error:21211", "error:21211", "terminal"),
    "opted out (21610)": (None, "error:21610", "terminal"),
    "lost answer, status ok": ("hang*1", "hang*1", "status check, no redial"),
    "lost answer, no status": ("hang", "hang", "unknown, stop"),
    "garbled 2xx (once)": ("malformed*1", "malformed*1", "status check, no resend"),
}


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def table(kind: str, twilio_url: str, telnyx_url: str) -> Any:
    return parse_routes(f"""version: 1
providers:
  twilio:
    type: twilio
    kind: {kind}
    account_sid: AC0123456789abcdef0123456789abcdef
    auth_token: "${{TW_TOKEN}}"
    from: "+15550100"
    base_url: {twilio_url}
    timeout_ms: 300
  telnyx:
    type: telnyx
    kind: {kind}
    api_key: "${{TX_KEY}}"
    connection_id: "1494404757140276705"
    from: "+15550101"
    base_url: {telnyx_url}/v2
    timeout_ms: 300
defaults:
  {kind}: [twilio, telnyx]
  resilience: {{retries: 1, backoff: {{base_ms: 50, max_ms: 200}}, turn_deadline_ms: 8000}}
""", env=ENV)


def created(emu: Any, what: str) -> int:
    return sum(1 for r in emu.state.requests if r.get("event") == f"{what}_created")


async def cell(kind: str, fault: str | None, n: int) -> dict[str, Any]:
    resilience.reset()
    what = "call" if kind == "call" else "message"
    async with emulate("twilio") as twilio, emulate("telnyx") as telnyx:
        routes = table(kind, twilio.url if fault is not None else closed_port(), telnyx.url)
        # one pool per cell, as an application keeps one: clients (and their TLS setup) are reused
        pool = ProviderPool(routes.config.providers, BuildContext(env=ENV))
        rows: list[tuple[Any, float, int]] = []
        cpus: list[float] = []
        for _ in range(n):
            twilio.state.faults = parse_faults(fault)  # counted faults (*1) strike every placement
            before = created(twilio, what) + created(telnyx, what)
            t0, c0 = time.perf_counter(), time.process_time()
            if kind == "call":
                outcome = await place_call(routes, TO, twiml="<Response><Say>hi</Say></Response>", env=ENV,
                                           pool=pool)
            else:
                outcome = await send_sms(routes, TO, "hi", env=ENV, pool=pool)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            made = created(twilio, what) + created(telnyx, what) - before
            rows.append((outcome, elapsed, made))
            cpus.append(cpu)
        await pool.aclose()
    placed = [r for r in rows if r[0].ok]
    times = sorted(e for _, e, _ in placed)
    by: dict[str, int] = {}
    for o, _, _ in placed:
        by[o.result.carrier] = by.get(o.result.carrier, 0) + 1
    stopped: dict[str, int] = {}
    for o, _, _ in rows:
        if not o.ok:
            stopped[o.error.reason] = stopped.get(o.error.reason, 0) + 1
    return {
        "n": n, "placed": len(placed), "by_carrier": by, "stopped": stopped,
        "attempts": round(statistics.mean(len(o.attempts) for o, _, _ in rows), 2),
        "failovers": round(statistics.mean(o.failovers for o, _, _ in rows), 2),
        "duplicates": sum(max(0, made - 1) for _, _, made in rows),
        "gone_out_unreported": sum(1 for o, _, made in rows if not o.ok and made and o.error.reason != "unknown_outcome"),
        "cpu_ms_p50": round(statistics.median(cpus) * 1000, 1),
        "placed_ms_p50": round(statistics.median(times) * 1000, 1) if times else None,
        "placed_ms_p95": round(times[min(len(times) - 1, int(0.95 * len(times)))] * 1000, 1) if times else None,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="placements per cell")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger("voicerouter").setLevel(logging.ERROR)
    results: dict[str, dict[str, Any]] = {}
    for name, (call_fault, sms_fault, expect) in CLASSES.items():
        for kind, fault in (("call", call_fault), ("sms", sms_fault)):
            if name.startswith("opted out") and kind == "call":
                continue  # opt-out is a messaging rule
            results[f"{name} / {kind}"] = {"expect": expect, **await cell(kind, fault, args.n)}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'class / kind':<36} {'expect':<26} {'placed':>7} {'by':<22} {'attempts':>8} {'failovers':>9} "
          f"{'dups':>4} {'p50 ms':>7} {'p95 ms':>7} {'cpu ms':>6}  stopped")
    for key, r in results.items():
        by = ",".join(f"{k}:{v}" for k, v in r["by_carrier"].items()) or "-"
        stopped = ",".join(f"{k}:{v}" for k, v in r["stopped"].items()) or "-"
        print(f"{key:<36} {r['expect']:<26} {r['placed']:>3}/{r['n']:<3} {by:<22} {r['attempts']:>8} "
              f"{r['failovers']:>9} {r['duplicates']:>4} {r['placed_ms_p50'] or '-':>7} {r['placed_ms_p95'] or '-':>7} "
              f"{r['cpu_ms_p50']:>6}  {stopped}")
    total = sum(r["duplicates"] for r in results.values())
    print(f"\nduplicates in all cells: {total}")
    if total:
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())
