"""petkit index build|add|remove|info: a saved gallery for 'petkit search'."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from petkit.cli.common import console, err_console, parse_options, print_fields, written
from petkit.data.manifest import UNKNOWN_IDENTITY

app = typer.Typer(help="Build and maintain a saved gallery index (faiss) of enrolled individuals.", no_args_is_help=True)


@app.command("build", help=(
    "Build an index from labelled gallery embeddings; prints its recall@10 against exact search.\n\n"
    "Kinds: flat (exact inner product, the default), ivf and hnsw (approximate, for large galleries).\n\n"
    "Example: petkit index build gallery.npz -o gallery.index --kind hnsw --param ef_search=256"))
def build_command(
    embeddings: Path = typer.Argument(..., help="Gallery embeddings (.npz) of labelled images."),
    out: Path = typer.Option(Path("gallery.index"), "--out", "-o", help="Output index file."),
    split: Optional[str] = typer.Option(None, "--split", help="Only this split."),
    kind: str = typer.Option("flat", "--kind", help="flat, ivf or hnsw."),
    param: list[str] = typer.Option([], "--param", help="KEY=VALUE: ivf nlist/nprobe, hnsw m/ef_construction/ef_search (repeatable)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="Store this calibrated threshold with the index."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    from petkit.retrieval.search import build_index

    params = parse_options([f"index.{p}" for p in param]).get("index", {})
    index, recall = build_index(embeddings, split, kind, params, calibration, out=out, overwrite=overwrite)
    console.print(f"{len(index)} images of {index.n_identities} identities, {kind} {index.params or ''}; "
                  f"recall@10 against exact search {recall:.4f}")
    written(("index", out))


@app.command("add", help="Enrol more images (new individuals or more photos of known ones).\n\nExample: petkit index add gallery.index new_dogs.npz")
def add_command(
    index_path: Path = typer.Argument(..., help="Index from 'petkit index build'."),
    embeddings: Path = typer.Argument(..., help="Embeddings of labelled images, from the index's model."),
    split: Optional[str] = typer.Option(None, "--split", help="Only this split."),
) -> None:
    from petkit.retrieval.index import GalleryIndex
    from petkit.retrieval.search import add_to_index

    index = GalleryIndex.load(index_path)
    added = add_to_index(index, embeddings, split)
    index.save(index_path)
    console.print(f"added {added} images; the index holds {len(index)} images of {index.n_identities} identities")
    written(("index", index_path))


@app.command("remove", help="Forget every image of the given identities.\n\nExample: petkit index remove gallery.index --identity rex")
def remove_command(
    index_path: Path = typer.Argument(..., help="Index from 'petkit index build'."),
    identity: list[str] = typer.Option(..., "--identity", help="Identity to remove (repeatable)."),
) -> None:
    from petkit.retrieval.index import GalleryIndex

    index = GalleryIndex.load(index_path)
    removed = index.remove(identity)
    index.save(index_path)
    console.print(f"removed {removed} images of {len(identity)} identities; {len(index)} images of {index.n_identities} identities left")
    written(("index", index_path))


@app.command("info", help="What an index holds.\n\nExample: petkit index info gallery.index")
def info_command(index_path: Path = typer.Argument(..., help="Index from 'petkit index build'.")) -> None:
    from petkit.retrieval.index import GalleryIndex

    index = GalleryIndex.load(index_path)
    print_fields((("kind", index.kind), ("params", index.params), ("images", len(index)), ("identities", index.n_identities),
                  ("dimensions", index.vectors.shape[1]), ("model", index.model), ("fingerprint", index.fingerprint),
                  ("threshold", index.calibration or "none")))


def register_search(root: typer.Typer) -> None:
    root.command("search", help=(
        "Top-k enrolled identities for an image or a folder of images, against a saved index; with a "
        "calibrated threshold, a best match below it is reported as unknown.\n\n"
        "Example: petkit search gallery.index photo.jpg --top-k 5"))(search_command)


def search_command(
    index_path: Path = typer.Argument(..., help="Index from 'petkit index build'."),
    images: Path = typer.Argument(..., help="An image file or a folder of images."),
    model: Optional[Path] = typer.Option(None, "--model", help="Checkpoint or model.onnx (default: the index's model)."),
    top_k: int = typer.Option(5, "--top-k", help="Identities per image."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Accept a match at this cosine similarity or above."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="calibration.json (default: the index's, else the one beside the model)."),
    unknown_label: str = typer.Option(UNKNOWN_IDENTITY, "--unknown-label", help="Shown when the best match is below the threshold."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the matches as CSV (image,rank,identity,score,accepted)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    from petkit.cli.common import progress_bar
    from petkit.retrieval.index import GalleryIndex
    from petkit.retrieval.search import search

    index = GalleryIndex.load(index_path)
    with progress_bar("embedding") as tracker:
        result = search(index, images, model, top_k, threshold, calibration, device, tracker, tracker.set_total, out=out, overwrite=overwrite)
    _print_matches(result.matches, result.threshold, result.source, unknown_label)
    for image, reason in result.skipped:
        err_console.print(f"[yellow]skipped:[/] {escape(image)}: {escape(reason)}")
    if result.skipped:
        console.print(f"answered {len({m.image for m in result.matches})} images; skipped {len(result.skipped)} that could not be decoded")
    if out:
        written(("matches", out))


def _print_matches(matches, threshold, source, unknown_label) -> None:
    table = Table(title="search" + (f" (threshold {threshold:.4f} from {source})" if threshold is not None else " (no threshold)"))
    for column in ("image", "answer", "rank", "identity", "score"):
        table.add_column(column, justify="right" if column in ("rank", "score") else "left")
    for m in matches:
        answer = (m.identity if m.accepted else unknown_label) if m.rank == 1 else ""
        table.add_row(m.image if m.rank == 1 else "", answer, str(m.rank), m.identity, f"{m.score:.4f}")
    console.print(table)
