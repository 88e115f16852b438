"""How a command ends its process: `exit_process`, the one way out once native engines may be loaded."""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def exit_process(code: int, *, at_once: bool = False) -> NoReturn:
    """End the process with `code`: output flushed and the `atexit` handlers run (OpenTelemetry's
    span export, PortAudio's shutdown), but no interpreter finalization.

    Every command that may have loaded a native engine ends here. Their worker threads (ONNX
    Runtime, CTranslate2, PortAudio) may still be running, and finalizing the interpreter under them
    can make the C++ runtime abort the process ("terminate called without an active exception",
    exit 134) instead of exiting with `code`. `at_once` skips the handlers too (a second Ctrl-C)."""
    import atexit

    _flush()
    if not at_once:
        atexit._run_exitfuncs()
        _flush()
    os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said there
            pass
