"""Every registered augmentation and sampler, iterated from the registries (DDP shards, balance, pair layout)."""

from collections import Counter

import pytest
import torch

from petkit.errors import PetkitError
from petkit.registry import AUGMENTATIONS, SAMPLERS


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_every_augmentation_keeps_shape_and_range(name):
    args = {"transforms": [{"name": "RandomResizedCrop", "args": {"scale": [0.5, 1.0]}}, {"name": "RandomErasing", "args": {"p": 1.0}}]} if name == "v2" else {}
    augmentation = AUGMENTATIONS.build({"name": name, "args": args}, image_size=32)
    torch.manual_seed(0)
    images = torch.rand(6, 3, 32, 32)
    out = augmentation(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, images) == (name == "none")


def test_v2_pipeline_errors_are_readable():
    with pytest.raises(PetkitError, match="normalisation lives in the model"):
        AUGMENTATIONS.build({"name": "v2", "args": {"transforms": [{"name": "Normalize"}]}}, image_size=32)
    with pytest.raises(PetkitError, match="'Blurr' is not a torchvision"):
        AUGMENTATIONS.build({"name": "v2", "args": {"transforms": [{"name": "Blurr"}]}}, image_size=32)
    with pytest.raises(PetkitError, match=r"transforms\[0\] ColorJitter"):
        AUGMENTATIONS.build({"name": "v2", "args": {"transforms": [{"name": "ColorJitter", "args": {"brightness": -1}}]}}, image_size=32)

LABELS = [0] * 9 + [1] * 2 + [2] * 5 + [3] * 1 + [4] * 7 + [5] * 4 + [6] * 6


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_shards_disjointly_under_ddp(name):
    whole = SAMPLERS.build({"name": name}, labels=LABELS, seed=3, rank=0, world_size=1)
    whole.set_epoch(2)
    epoch = list(whole)
    shards = []
    for rank in range(3):
        sampler = SAMPLERS.build({"name": name}, labels=LABELS, seed=3, rank=rank, world_size=3)
        sampler.set_epoch(2)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler)
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    positions = [i for rank in range(3) for i in range(rank, len(epoch), 3)]
    assert sorted(positions) == list(range(len(epoch)))  # each batch of the epoch belongs to one rank
    flat = [tuple(b) for s in shards for b in s]
    assert Counter(tuple(b) for b in epoch) <= Counter(flat)  # nothing lost; padding repeats only
    if name == "pk":
        assert {i for b in epoch for i in b} == set(range(len(LABELS)))


def test_class_balanced_sampler_draws_identities_evenly():
    labels = [0] * 200 + [1] * 20 + [2] * 5
    sampler = SAMPLERS.build({"name": "class_balanced", "args": {"batch_size": 50}}, labels=labels, seed=0)
    counts = Counter()
    for epoch in range(20):
        sampler.set_epoch(epoch)
        counts.update(labels[i] for b in sampler for i in b)
    shares = [counts[c] / sum(counts.values()) for c in range(3)]
    assert all(abs(share - 1 / 3) < 0.03 for share in shares)


def test_siamese_pairs_are_adjacent_and_balanced():
    sampler = SAMPLERS.build({"name": "siamese_pairs", "args": {"pairs_per_batch": 5}}, labels=LABELS, seed=1)
    pairs = [(b[i], b[i + 1]) for b in sampler for i in range(0, len(b), 2)]
    assert len(pairs) == len(LABELS) and all(a != b for a, b in pairs)
    positives = sum(LABELS[a] == LABELS[b] for a, b in pairs)
    assert positives == round(0.5 * len(LABELS))
    assert {a for a, _ in pairs} == set(range(len(LABELS)))  # every image anchors one pair per epoch
