"""Batched embedding of an image store through the engine (no augmentation)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from petkit.data.batches import ImageStore, sequential
from petkit.engine.engine import Engine


@torch.inference_mode()
def embed_store(
    model: torch.nn.Module,
    store: ImageStore,
    engine: Engine,
    batch_size: int = 128,
    flip_tta: bool = False,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """float32 [N, D], L2-normalised; ``flip_tta`` averages with the mirrored image."""
    model = engine.inference_copy(model)
    out = []
    for indices, batch in store.batches(sequential(len(store), batch_size)):
        images = engine.images(batch)
        with engine.autocast():
            vectors = model(images)
            if flip_tta:
                vectors = vectors + model(images.flip(3))
        out.append(F.normalize(vectors.float(), dim=1).cpu())
        if progress:
            progress(len(indices))
    return torch.cat(out).numpy().astype(np.float32, copy=False)
