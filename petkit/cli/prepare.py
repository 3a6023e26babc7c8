"""petkit prepare SRC -o OUT"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from petkit.cli.common import console, progress_bar, written


def register(app: typer.Typer) -> None:
    app.command(
        "prepare",
        help=(
            "Check raw photos and write manifest.csv + prepare_report.json.\n\n"
            "SRC is a folder of <identity>/<image> folders or a CSV listing (path,identity). "
            "Every image is decoded; corrupt, empty, non-image, unlabelled and duplicate files are "
            "reported and left out. The source is never modified.\n\n"
            "Example: petkit prepare photos/ -o data/ --flatten-distortion --split-by identity"
        ),
    )(prepare_command)


def prepare_command(
    src: Path = typer.Argument(..., help="Folder of <identity>/ folders, or a CSV with path,identity."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for manifest.csv and prepare_report.json."),
    flatten_distortion: bool = typer.Option(
        False, "--flatten-distortion", help="Fold <identity>/distortion/ images into their identity (in the manifest; files stay put)."
    ),
    split_by: str = typer.Option("identity", "--split-by", help="identity (open-set: val/test individuals unseen in training), image (closed-set) or none."),
    ratios: str = typer.Option("0.7,0.15,0.15", "--ratios", help="train,val,test shares."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split."),
    gallery_per_identity: int = typer.Option(
        0, "--gallery-per-identity", help="Mark N images per val/test identity as gallery, the rest as query (0: leave-one-out)."
    ),
    workers: int = typer.Option(4, "--workers", help="Decoding threads."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing manifest/report in OUT."),
) -> None:
    from petkit.data.prepare import PrepareOptions, parse_ratios, prepare

    if split_by not in ("identity", "image", "none"):
        raise typer.BadParameter("use identity, image or none", param_hint="--split-by")
    options = PrepareOptions(flatten_distortion, split_by, parse_ratios(ratios), seed, gallery_per_identity, workers, overwrite)
    with progress_bar("checking images") as tracker:
        result = prepare(src, out, options, progress=tracker, on_total=tracker.set_total)
    _print_summary(result.report)
    written(("manifest", result.manifest_path), ("report", result.report_path))


def _print_summary(report: dict) -> None:
    summary = report["summary"]
    per = summary["images_per_identity"]
    table = Table(title="prepare summary", show_header=False)
    table.add_row("identities", str(summary["identities"]))
    table.add_row("images", str(summary["images"]))
    table.add_row("images per identity (min/median/max)", f"{per['min']} / {per['median']:g} / {per['max']}")
    for split, counts in summary["splits"].items():
        table.add_row(f"split {split}", f"{counts['identities']} identities, {counts['images']} images")
    table.add_row("excluded files", str(summary["excluded"]))
    table.add_row("skipped files", str(summary["skipped"]))
    console.print(table)
    for item in report["excluded"][:10]:
        console.print(f"  [yellow]excluded[/] {item['path']}: {item['reason']}")
    for item in report["skipped"][:5]:
        console.print(f"  [yellow]skipped[/] {item['path']}: {item['reason']}")
    hidden = max(0, len(report["excluded"]) - 10) + max(0, len(report["skipped"]) - 5)
    if hidden:
        console.print(f"  ... and {hidden} more in the report")
    if summary["identities_without_usable_images"]:
        names = ", ".join(summary["identities_without_usable_images"][:10])
        console.print(f"  [yellow]identities with no usable image:[/] {names}")
