"""petkit synth OUT"""

from __future__ import annotations

from pathlib import Path

import typer

from petkit.cli.common import console, progress_bar, written


def register(app: typer.Typer) -> None:
    app.command(
        "synth",
        help=(
            "Generate the embedded synthetic pets dataset (<identity>/<image>.jpg).\n\n"
            "Each identity has fixed coat colours, pattern and markings; each photo a new pose, "
            "lighting, background and noise. Used by the demo and the tests.\n\n"
            "Example: petkit synth synthetic-pets/ --identities 100 --images 10"
        ),
    )(synth_command)


def synth_command(
    out: Path = typer.Argument(..., help="New or empty folder to write into."),
    identities: int = typer.Option(40, "--identities", help="Number of individuals."),
    images: int = typer.Option(12, "--images", help="Photos per individual."),
    size: int = typer.Option(96, "--size", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same pictures."),
    fakes: int = typer.Option(0, "--fakes", help="Also draw N forged look-alikes per individual into <identity>/fake/."),
) -> None:
    from petkit.data.synthetic import generate

    with progress_bar("drawing pets", identities) as advance:
        generate(out, identities, images, size, seed, progress=advance, fakes_per_identity=fakes)
    console.print(f"{identities} identities x {images} images of {size}px" + (f", {fakes} fakes each in <identity>/fake/" if fakes else ""))
    written(("images", out))
