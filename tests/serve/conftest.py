"""A tiny served gallery: a random 16-d resnet10t at 32 px over synthetic pets (the same photo finds itself)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    import torch

    from petkit.config import resolve
    from petkit.models.checkpoint import save_checkpoint
    from petkit.models.model import build_model

    torch.manual_seed(0)
    config = resolve(None, ["model.backbone.args.model=resnet10t", "model.head.args.embedding_dim=16", "model.backbone.args.pretrained=false"])
    path = tmp_path_factory.mktemp("serve-model") / "best.pt"
    save_checkpoint(path, build_model(config.model, 32).eval())
    return path


@pytest.fixture(scope="session")
def enrolled_photos(pets_dir, tmp_path_factory) -> Path:
    """The first 3 photos of each of the 8 synthetic pets, as identity folders."""
    root = tmp_path_factory.mktemp("serve-enrolled") / "pets"
    for folder in sorted(pets_dir.iterdir()):
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:3]:
            shutil.copy(image, root / folder.name / image.name)
    return root


@pytest.fixture(scope="session")
def seed_embeddings(tiny_model, enrolled_photos, tmp_path_factory) -> Path:
    from petkit.engine.embedder import embed

    out = tmp_path_factory.mktemp("serve-embeddings") / "gallery.npz"
    embed(tiny_model, enrolled_photos, device="cpu", out=out)
    return out


@pytest.fixture()
def gallery_dir(seed_embeddings, tmp_path) -> Path:
    from petkit.serve.gallery import init_gallery

    folder = tmp_path / "registry"
    init_gallery(folder, seed_embeddings)
    return folder


@pytest.fixture()
def client(tiny_model, gallery_dir):
    """(TestClient, service) with writes open and threshold 0.9."""
    from fastapi.testclient import TestClient

    from petkit.serve.app import create_app
    from petkit.serve.service import Service

    service = Service.open(tiny_model, gallery_dir, threshold=0.9, device="cpu")
    with TestClient(create_app(service), raise_server_exceptions=False) as test_client:
        yield test_client, service
    service.close()
