"""voicerouter: route voice sessions to STT, TTS and S2S providers by tenant, region, flags and A/B split."""

__version__ = "0.1.0"
