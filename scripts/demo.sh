#!/usr/bin/env bash
# One command from a fresh clone: set up, then replay the samples through the offline default route
# (Moonshine partials + Whisper final transcript -> echo agent -> Piper TTS; no key, no network) and
# check the expectations.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/voicerouter replay samples/*.wav --expect samples/expectations.yaml --out out/demo "$@"
