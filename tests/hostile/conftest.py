"""Shared material for the hostile-input suite: a small model, its embeddings and index, and a
helper that runs the real CLI entry point in-process and returns (exit code, stdout, stderr)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def run_petkit(capsys, *argv) -> tuple[int, str, str]:
    from petkit.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def one_line_error(code: int, err: str) -> bool:
    """Exit 2, no traceback, one 'error:' line (plus at most a hint line)."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return code == 2 and "Traceback" not in err and len(errors) == 1 and len(lines) <= 2


@pytest.fixture(scope="session")
def material(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint (copied), photos, embeddings, an index, a calibration file and a train manifest."""
    from petkit.data.prepare import PrepareOptions, prepare
    from petkit.engine.embedder import embed
    from petkit.retrieval.calibration import calibrate
    from petkit.retrieval.search import build_index

    root = tmp_path_factory.mktemp("hostile")
    model = root / "model" / "best.pt"
    model.parent.mkdir()
    shutil.copy(FIXTURES / "checkpoint-v0.1.0.pt", model)
    photos = root / "photos"
    shutil.copytree(FIXTURES / "fixture-photos", photos)
    emb = root / "emb.npz"
    embed(model, photos, device="cpu", out=emb)
    index = root / "gallery.index"
    build_index(emb, out=index)
    calibration = root / "calibration.json"
    calibrate(emb, 0.34, out=calibration)
    manifest = prepare(photos, root / "data", PrepareOptions(split_by="image")).manifest_path
    return {"root": root, "model": model, "photos": photos, "emb": emb, "index": index, "calibration": calibration,
            "manifest": manifest, "photo": photos / "pet_000" / "pet_000_00.jpg"}
