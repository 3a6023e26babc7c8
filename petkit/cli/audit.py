"""petkit audit EMBEDDINGS -> audit.csv: likely mislabels, near-duplicates, one animal under two names."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from petkit.cli.common import console, written
from petkit.evaluation import audit as A

WHAT = {
    "mislabel": "photos whose own identity is not among their nearest identities",
    "split_leak": "near-duplicate photo pairs in different splits (leakage into val/test)",
    "identity_duplicate": "near-duplicate photo pairs filed under different identities",
    "same_animal": "identity pairs whose photos match each other better than themselves",
}


def register(app: typer.Typer) -> None:
    app.command(
        "audit",
        help=(
            "Check a dataset through its embeddings: likely mislabelled photos, near-duplicates across splits "
            "and identities, and identities that are probably the same animal; writes audit.csv (kind, score, "
            "both photos, their identities and splits), surest first.\n\n"
            "Example: petkit audit runs/dogs/embeddings.npz -o audit.csv"
        ),
    )(audit_command)


def audit_command(
    embeddings: Path = typer.Argument(..., help="embeddings.npz from 'petkit embed' (of the whole dataset, all splits)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output CSV (default: audit.csv beside the embeddings)."),
    mislabel_k: int = typer.Option(A.MISLABEL_K, "--mislabel-k", help="Flag a photo when its identity is not among its K nearest identities."),
    mislabel_margin: float = typer.Option(A.MISLABEL_MARGIN, "--mislabel-margin", help="... by at least this much cosine similarity."),
    duplicate_threshold: float = typer.Option(A.DUPLICATE_THRESHOLD, "--duplicate-threshold",
                                              help="Cosine similarity from which two photos are near-duplicates."),
    same_animal_share: float = typer.Option(A.SAME_ANIMAL_SHARE, "--same-animal-share",
                                            help="Flag two identities when at least this share of each one's photos match the other best."),
    top: int = typer.Option(3, "--top", min=0, max=1000, help="Findings of each kind to print."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    target = out or embeddings.with_name("audit.csv")
    result, data = A.audit_file(embeddings, target, overwrite, mislabel_k=mislabel_k, mislabel_margin=mislabel_margin,
                             duplicate_threshold=duplicate_threshold, same_animal_share=same_animal_share)
    console.print(f"audited {result.images} photos of {result.identities} identities"
                  + (f" ({result.unjudged} alone in their identity: no mislabel verdict)" if result.unjudged else ""))
    table = Table("check", "found", "what", box=None, pad_edge=False)
    for kind in A.KINDS:
        table.add_row(kind, str(result.counts[kind]), WHAT[kind])
    console.print(table)
    data_rows = A.rows(result, data) if top > 0 and result.findings else []
    for kind in A.KINDS:
        shown = [r for r in data_rows if r["kind"] == kind][:top]
        for row in shown:
            console.print(f"  [bold]{kind}[/] {row['score']}  {escape(row['path_a'])} ({escape(row['identity_a'])})"
                          + (f"  ~  {escape(row['path_b'])} ({escape(row['identity_b'])})" if row["path_b"] else ""))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    written(("audit", target))
