"""Shared fixtures: tiny synthetic photo sets made on the fly (no downloads, no ../shared)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

# pretrained: auto is the run default: the suite never reaches for the hub (a CI machine with a network
# would otherwise download ImageNet weights into every default run); tests of the hub path mock it
os.environ["HF_HUB_OFFLINE"] = "1"

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def pets_dir(tmp_path_factory) -> Path:
    """8 synthetic identities x 5 photos, 48 px."""
    from petkit.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("pets") / "photos", identities=8, images_per_identity=5, size=48, seed=1)


@pytest.fixture(scope="session")
def prepared(pets_dir, tmp_path_factory) -> Path:
    """manifest.csv of pets_dir split by identity with a gallery image per val/test identity."""
    from petkit.data.prepare import PrepareOptions, prepare

    out = tmp_path_factory.mktemp("prepared")
    return prepare(pets_dir, out, PrepareOptions(ratios=(0.5, 0.25, 0.25), gallery_per_identity=1)).manifest_path


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root with the sha1 of its bytes: to prove a folder was not touched."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }
