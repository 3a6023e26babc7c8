"""Batch samplers: lists of dataset indices, one list per batch.

- ``pk``: P identities x K images per batch, what triplet mining needs (positives and
  negatives in every batch). Every image appears at least once per epoch: each identity's
  images are shuffled and cut into chunks of K; a short last chunk is filled by drawing again
  from the same identity (with replacement when it has fewer than K images, so a single-image
  identity repeats that image; augmentation makes the copies differ).
- ``class_balanced``: for classification losses; each item is drawn with probability
  1 / (number of classes x images of its class), so rare identities are seen as often as common ones.
- ``siamese_pairs``: balanced positive/negative pairs laid out as (0, 1), (2, 3), ... for
  pair training with the ``adjacent_pairs`` miner.

Under DistributedDataParallel every rank builds the same epoch (same seed) and keeps the
batches ``rank, rank + world_size, ...``: the shards are disjoint and, padded by repeating
the first batches, equally long (ranks must take the same number of steps).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Annotated, Iterator, Sequence

import torch.distributed as dist

from petkit.errors import PetkitError
from petkit.interfaces import BatchSampler
from petkit.limits import OPEN_FRACTION, NonNegativeInt, Range
from petkit.registry import SAMPLERS


class ShardedBatchSampler(BatchSampler):
    """Common part: labels, epoch-seeded randomness and the DDP shard of the epoch's batches.

    Subclasses define ``epoch_batches(rng)`` (the whole epoch, identical on every rank) and
    ``batches_per_epoch()``.
    """

    def __init__(self, labels: Sequence[int], seed: int, rank: int | None, world_size: int | None):
        self.labels = [int(label) for label in labels]
        self.by_identity: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(self.labels):
            self.by_identity[label].append(index)
        if len(self.by_identity) < 2:
            raise PetkitError(
                f"training needs at least 2 identities, found {len(self.by_identity)}",
                "check the 'train' split of the manifest",
            )
        running = dist.is_available() and dist.is_initialized()
        self.world_size = world_size or (dist.get_world_size() if running else 1)
        self.rank = rank if rank is not None else (dist.get_rank() if running else 0)
        if not 0 <= self.rank < self.world_size:
            raise PetkitError(f"sampler rank {self.rank} is outside world size {self.world_size}")
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches(random.Random(self.seed * 100_003 + self.epoch))
        per_rank = math.ceil(len(batches) / self.world_size)
        # pad by cycling through the epoch again: fewer batches than ranks must still fill every rank
        padded = (batches * self.world_size)[: per_rank * self.world_size]
        return iter(padded[self.rank::self.world_size])

    def __len__(self) -> int:
        return math.ceil(self.batches_per_epoch() / self.world_size)


class PKSampler(ShardedBatchSampler):
    def __init__(self, labels: Sequence[int], p: int = 16, k: int = 4, seed: int = 0, rank: int | None = None, world_size: int | None = None):
        super().__init__(labels, seed, rank, world_size)
        self.p = min(p, len(self.by_identity))
        self.k = k

    @property
    def batch_size(self) -> int:
        return self.p * self.k

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

    def epoch_batches(self, rng: random.Random) -> list[list[int]]:
        remaining = self._chunks(rng)
        batches = []
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
            batches.append(batch)
        return batches

    def batches_per_epoch(self) -> int:
        chunks = sum(-(-len(v) // self.k) for v in self.by_identity.values())
        return max(1, -(-chunks // self.p))


class ClassBalancedSampler(ShardedBatchSampler):
    def __init__(self, labels: Sequence[int], batch_size: int = 64, seed: int = 0, rank: int | None = None, world_size: int | None = None):
        super().__init__(labels, seed, rank, world_size)
        self.batch_size = batch_size
        self.weights = [1.0 / len(self.by_identity[label]) for label in self.labels]

    def epoch_batches(self, rng: random.Random) -> list[list[int]]:
        drawn = rng.choices(range(len(self.labels)), weights=self.weights, k=self.batches_per_epoch() * self.batch_size)
        return [drawn[i:i + self.batch_size] for i in range(0, len(drawn), self.batch_size)]

    def batches_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.labels) / self.batch_size))


class SiamesePairSampler(ShardedBatchSampler):
    adjacent_pairs = True  # the trainer mines its pairs with the adjacent_pairs miner

    def __init__(self, labels: Sequence[int], pairs_per_batch: int = 32, positive_fraction: float = 0.5, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None):
        super().__init__(labels, seed, rank, world_size)
        self.pairs_per_batch = pairs_per_batch
        self.positive_fraction = positive_fraction
        if not any(len(v) > 1 for v in self.by_identity.values()):
            raise PetkitError("siamese_pairs needs an identity with at least 2 images to form positive pairs")

    @property
    def batch_size(self) -> int:
        return 2 * self.pairs_per_batch

    def epoch_batches(self, rng: random.Random) -> list[list[int]]:
        """One pair per image as its first item: a share of positive_fraction are positives."""
        anchors = list(range(len(self.labels)))
        rng.shuffle(anchors)
        can_pair = [i for i in anchors if len(self.by_identity[self.labels[i]]) > 1]
        positives = set(can_pair[: round(self.positive_fraction * len(anchors))])
        identities = sorted(self.by_identity)
        pairs = []
        for anchor in anchors:
            label = self.labels[anchor]
            if anchor in positives:
                partner = rng.choice([j for j in self.by_identity[label] if j != anchor])
            else:
                other = rng.choice(identities)
                while other == label:
                    other = rng.choice(identities)
                partner = rng.choice(self.by_identity[other])
            pairs.append([anchor, partner])
        step = self.pairs_per_batch
        return [[i for pair in pairs[s:s + step] for i in pair] for s in range(0, len(pairs), step)]

    def batches_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.labels) / self.pairs_per_batch))


@SAMPLERS.register("pk")
def pk(labels: Sequence[int], p: Annotated[int, Range(2, 100_000)] = 16, k: Annotated[int, Range(1, 10_000)] = 4, seed: NonNegativeInt = 0,
       rank: int | None = None, world_size: int | None = None) -> PKSampler:
    """P identities x K images per batch; every image at least once per epoch."""
    return PKSampler(labels, p, k, seed, rank, world_size)


@SAMPLERS.register("class_balanced")
def class_balanced(labels: Sequence[int], batch_size: Annotated[int, Range(2, 1_000_000)] = 64, seed: NonNegativeInt = 0, rank: int | None = None,
                   world_size: int | None = None) -> ClassBalancedSampler:
    """Batches drawn with equal weight per identity (for classification losses)."""
    return ClassBalancedSampler(labels, batch_size, seed, rank, world_size)


@SAMPLERS.register("siamese_pairs")
def siamese_pairs(labels: Sequence[int], pairs_per_batch: Annotated[int, Range(1, 500_000)] = 32,
                  positive_fraction: Annotated[float, OPEN_FRACTION] = 0.5, seed: NonNegativeInt = 0,
                  rank: int | None = None, world_size: int | None = None) -> SiamesePairSampler:
    """Siamese mode: balanced positive/negative pairs drawn per epoch (use with contrastive)."""
    return SiamesePairSampler(labels, pairs_per_batch, positive_fraction, seed, rank, world_size)
