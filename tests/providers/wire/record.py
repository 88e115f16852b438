"""Record the official SDKs' requests into references.json: `python tests/providers/wire/record.py`.

Run it after upgrading an SDK; the fidelity test then holds voicerouter's clients to what it sends.
"""

from __future__ import annotations

import asyncio
import json
import sys
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wire.client_calls import PLACEHOLDERS, run_against_capture  # noqa: E402
from wire.reference import REFERENCES, summarize  # noqa: E402
from wire.sdk_calls import SDK_CALLS  # noqa: E402

KEY = "sk-wire-reference-0000"
# SDK habits that are not required by the API, with why the client leaves them out.
NOT_REQUIRED = {
    "elevenlabs.stream_input": {"try_trigger_generation": "an advanced trigger the API docs advise against; "
                                                          "the client sends flush at sentence ends instead"},
}
SDKS = {"openai": "openai", "deepgram": "deepgram-sdk", "elevenlabs": "elevenlabs", "cartesia": "cartesia",
        "gemini": "google-genai", "assemblyai": "assemblyai"}


async def record() -> dict:
    references: dict = {"_sdks": {vendor: f"{dist} {version(dist)}" for vendor, dist in SDKS.items()}}
    for op, call in SDK_CALLS.items():
        reference = summarize(await run_against_capture(call, KEY), KEY, PLACEHOLDERS)
        skipped = NOT_REQUIRED.get(op, {})
        reference["fields"] = [f for f in reference["fields"] if f not in skipped]
        if skipped:
            reference["not_required"] = skipped
        references[op] = reference
    return references


if __name__ == "__main__":
    REFERENCES.write_text(json.dumps(asyncio.run(record()), indent=1, sort_keys=True) + "\n")
    print(f"wrote {REFERENCES}")
