"""`voicerouter devices`: the microphones and speakers PortAudio sees, to pick one for `run`."""

from __future__ import annotations

from typing import Annotated

import typer


def devices(
    json_out: Annotated[bool, typer.Option("--json", help="Print the devices as JSON.")] = False,
) -> None:
    """List audio input and output devices: index, name, host API, channels, default rate, defaults."""
    from voicerouter.audio.devices import list_devices

    found = list_devices()
    if json_out:
        import json

        typer.echo(json.dumps([d.to_dict() for d in found], indent=2))
        return
    from rich.table import Table

    from voicerouter.cli.common import stdout_console

    console = stdout_console()
    if not found:
        console.print(
            "no audio devices found (PortAudio sees no sound card; on Linux check that ALSA lists one "
            "with `arecord -l` / `aplay -l`)"
        )
        return
    table = Table(title="audio devices", title_justify="left")
    for column in ("index", "name", "host API", "in", "out", "default rate", "default"):
        table.add_column(column, overflow="fold")
    for d in found:
        marks = [m for m, on in (("input", d.default_input), ("output", d.default_output)) if on]
        table.add_row(
            str(d.index), d.name, d.hostapi, str(d.max_input_channels), str(d.max_output_channels),
            f"{d.default_samplerate:g} Hz", ", ".join(marks) or "",
        )
    console.print(table)
    console.print("pick one with `voicerouter run --input-device N|NAME --output-device N|NAME`")


def register(app: typer.Typer) -> None:
    app.command("devices")(devices)
