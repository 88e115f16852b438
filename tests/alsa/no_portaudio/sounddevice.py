"""Stands in for sounddevice on a machine without the PortAudio library (put this folder first on
PYTHONPATH): importing it fails exactly as the real module does when libportaudio is missing."""

raise OSError("PortAudio library not found")
