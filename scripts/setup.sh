#!/usr/bin/env bash
# Create .venv with voicerouter and its test tools; install PortAudio when it is missing and we may.
# Idempotent and quick on re-runs (skips pip when pyproject.toml has not changed).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
EXTRAS="${VOICEROUTER_EXTRAS:-dev,plot,otel}"
# Silero VAD's model (vad: {engine: silero}) ships in this wheel; --no-deps keeps out torch, which
# only its own Python API needs (voicerouter loads the .onnx with onnxruntime).
SILERO="silero-vad==6.2.3"

# System packages through apt-get, with sudo when not root (and only when sudo is there to use).
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
can_apt() { command -v apt-get >/dev/null 2>&1 && { [ -z "$SUDO" ] || command -v sudo >/dev/null 2>&1; }; }
apt_install() {  # PACKAGE WHAT: what the message says is being installed
  echo "setup: installing $2" >&2
  $SUDO apt-get update -qq >/dev/null || exit  # as before: a failed update stops the setup
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}

if ! ldconfig -p 2>/dev/null | grep -q libportaudio; then
  if command -v apt-get >/dev/null 2>&1; then
    if can_apt; then apt_install libportaudio2 "PortAudio (libportaudio2) for live audio"; fi
  elif command -v brew >/dev/null 2>&1; then
    brew list portaudio >/dev/null 2>&1 || brew install portaudio
  else
    echo "setup: PortAudio not found; live audio (voicerouter run) needs it - install libportaudio2" >&2
  fi
fi

# redis-server: the fleet tests (shared state across serve processes) start their own on loopback.
if ! command -v redis-server >/dev/null 2>&1 && can_apt; then
  apt_install redis-server "redis-server (fleet tests)" || \
    echo "setup: redis-server not installed; the fleet tests will be skipped" >&2
fi

# Chromium (headless) runs the browser page's test; optional for everything else.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 && can_apt; then
  apt_install chromium "chromium (headless browser test of the serve page)" || \
    echo "setup: chromium not installed; the browser test will be skipped" >&2
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.voicerouter-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)-$EXTRAS-$SILERO"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  .venv/bin/python -m pip install -q --no-deps "$SILERO"
  echo "$want" > "$stamp"
fi
