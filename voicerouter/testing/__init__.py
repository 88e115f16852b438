"""Wire-compatible provider emulators on 127.0.0.1, for offline tests of clients, routes and failover.

    async with emulate("deepgram", faults="error:503*2") as emu:
        ...  # point a provider's base_url at emu.url
"""

from voicerouter.testing.server import Emulator, EmulatorState, Fault, emulate, tone

__all__ = ["Emulator", "EmulatorState", "Fault", "emulate", "tone"]
