"""Shared material of the report tests: a small real/fake set and its report."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="session")
def fake_set(tmp_path_factory):
    """10 synthetic identities x 5 photos with 2 forgeries each, embedded with the 0.1.0 fixture checkpoint."""
    from petkit.data.prepare import PrepareOptions, prepare
    from petkit.data.synthetic import generate
    from petkit.engine.embedder import embed

    root = tmp_path_factory.mktemp("report")
    photos = generate(root / "photos", identities=10, images_per_identity=5, size=40, seed=2, fakes_per_identity=2)
    manifest = prepare(photos, root / "data", PrepareOptions(split_by="none")).manifest_path
    out = root / "all.npz"
    embed(FIXTURES / "checkpoint-v0.1.0.pt", manifest, device="cpu", out=out)
    return {"root": root, "emb": out, "manifest": manifest}


@pytest.fixture(scope="session")
def report(fake_set):
    from petkit.report import build_report

    out = fake_set["root"] / "report"
    result = build_report(fake_set["emb"], out=out, thresholds=[0.5], distance_thresholds=[0.5], model=FIXTURES / "checkpoint-v0.1.0.pt",
                          grid_queries=3, top_k=3)
    return result
