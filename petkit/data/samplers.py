"""Batch samplers: lists of dataset indices, one list per batch.

The P x K sampler puts P identities with K images each in every batch, which is what
triplet mining needs (positives and negatives in every batch). Every image appears at least
once per epoch: each identity's images are shuffled and cut into chunks of K; a short last
chunk is filled by drawing again from the same identity (with replacement when it has fewer
than K images, so a single-image identity repeats that image; augmentation makes the copies
differ).
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Iterator, Sequence

from petkit.errors import PetkitError
from petkit.registry import SAMPLERS


class PKSampler:
    def __init__(self, labels: Sequence[int], p: int = 16, k: int = 4, seed: int = 0):
        if p < 1 or k < 1:
            raise PetkitError(f"pk sampler needs p >= 1 and k >= 1, got p={p}, k={k}")
        self.labels = [int(label) for label in labels]
        self.by_identity: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(self.labels):
            self.by_identity[label].append(index)
        if len(self.by_identity) < 2:
            raise PetkitError(
                f"training needs at least 2 identities, found {len(self.by_identity)}",
                "check the 'train' split of the manifest",
            )
        self.p = min(p, len(self.by_identity))
        self.k = k
        self.seed = seed
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _chunks(self, rng: random.Random) -> dict[int, list[list[int]]]:
        chunks: dict[int, list[list[int]]] = {}
        for identity in sorted(self.by_identity):
            images = self.by_identity[identity][:]
            rng.shuffle(images)
            own = []
            for start in range(0, len(images), self.k):
                chunk = images[start:start + self.k]
                while len(chunk) < self.k:
                    chunk.append(rng.choice(images))
                own.append(chunk)
            chunks[identity] = own
        return chunks

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 100_003 + self.epoch)
        remaining = self._chunks(rng)
        while any(remaining.values()):
            active = [i for i, c in remaining.items() if c]
            # P distinct identities, drawn with weight = chunks left (Efraimidis-Spirakis keys):
            # identities with many images are spread over the epoch instead of piling up at its end
            keys = {i: rng.random() ** (1.0 / len(remaining[i])) for i in active}
            chosen = sorted(active, key=keys.__getitem__, reverse=True)[: self.p]
            batch = [index for i in chosen for index in remaining[i].pop()]
            if len(chosen) == 1:  # one identity left: borrow a chunk of another so it has negatives
                other = rng.choice([i for i in self.by_identity if i != chosen[0]])
                batch += [rng.choice(self.by_identity[other]) for _ in range(self.k)]
            yield batch

    def __len__(self) -> int:
        chunks = sum(-(-len(v) // self.k) for v in self.by_identity.values())
        return max(1, -(-chunks // self.p))



@SAMPLERS.register("pk")
def pk(labels: Sequence[int], p: int = 16, k: int = 4, seed: int = 0) -> PKSampler:
    """P identities x K images per batch; every image at least once per epoch."""
    return PKSampler(labels, p, k, seed)
