from collections import Counter

import pytest
import torch

from petkit.data.augment import BatchedAugment
from petkit.data.batches import ImageStore, sequential
from petkit.data.manifest import read_manifest
from petkit.data.samplers import PKSampler
from petkit.errors import PetkitError


def test_pk_batches_have_p_identities_with_k_images_and_cover_every_image():
    labels = [0] * 9 + [1] * 2 + [2] * 5 + [3] * 1 + [4] * 7 + [5] * 4
    sampler = PKSampler(labels, p=3, k=4, seed=1)
    seen = set()
    for indices in sampler:
        counts = Counter(labels[i] for i in indices)
        assert len(counts) <= 3 and all(c == 4 for c in counts.values())
        assert len(counts) >= 2
        seen.update(indices)
    assert seen == set(range(len(labels)))  # singletons and short identities included


def test_pk_is_seeded_per_epoch():
    labels = [i // 4 for i in range(40)]
    a, b = PKSampler(labels, 4, 4, seed=0), PKSampler(labels, 4, 4, seed=0)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert len(a) == len(first)


def test_pk_needs_two_identities():
    with pytest.raises(PetkitError, match="at least 2 identities"):
        PKSampler([0, 0, 0], 2, 2)


def test_identity_augmentation_is_a_no_op():
    images = torch.rand(3, 3, 16, 16)
    off = BatchedAugment(hflip=False, scale=[1.0, 1.0], shift=0, rotate=0, brightness=0, contrast=0, saturation=0, grayscale_p=0)
    torch.testing.assert_close(off(images), images, atol=1e-5, rtol=0)


def test_augmentation_is_random_bounded_and_seeded():
    images = torch.rand(4, 3, 16, 16)
    config = BatchedAugment()
    out1 = config(images, torch.Generator().manual_seed(3))
    out2 = config(images, torch.Generator().manual_seed(3))
    out3 = config(images, torch.Generator().manual_seed(4))
    assert out1.shape == images.shape and out1.min() >= 0 and out1.max() <= 1
    torch.testing.assert_close(out1, out2)
    assert not torch.allclose(out1, out3)


def test_flip_only_mirrors_the_image():
    images = torch.rand(64, 3, 8, 8)
    flip = BatchedAugment(hflip=True, scale=[1.0, 1.0], shift=0, rotate=0, brightness=0, contrast=0, saturation=0, grayscale_p=0)
    out = flip(images, torch.Generator().manual_seed(0))
    mirrored = [torch.allclose(o, i.flip(2), atol=1e-5) for o, i in zip(out, images)]
    same = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, images)]
    assert all(m or s for m, s in zip(mirrored, same)) and 10 < sum(mirrored) < 54


def test_cached_and_streamed_batches_are_identical(prepared):
    manifest = read_manifest(prepared)
    cached = ImageStore(manifest, 24, cache=True)
    streamed = ImageStore(manifest, 24, cache=False, num_workers=2)
    lists = sequential(len(manifest), 7)
    for (i1, b1), (i2, b2) in zip(cached.batches(lists), streamed.batches(lists)):
        assert i1 == i2 and b1.dtype == torch.uint8 and b1.shape == (len(i1), 3, 24, 24)
        assert torch.equal(b1, b2)


def test_grayscale_images_become_rgb(tmp_path):
    import numpy as np
    from PIL import Image

    from petkit.data.images import load_tensor

    Image.fromarray(np.full((12, 10), 77, dtype=np.uint8)).save(tmp_path / "g.pgm")
    tensor = load_tensor(tmp_path / "g.pgm", 8)
    assert tensor.shape == (3, 8, 8) and int(tensor.float().mean().round()) == 77


def test_a_corrupt_image_listed_in_a_manifest_is_a_clear_error(tmp_path):
    from petkit.data.manifest import write_manifest

    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_manifest(tmp_path / "m.csv", [{"path": "bad.jpg", "identity": "a"}], ["path", "identity"])
    store = ImageStore(read_manifest(tmp_path / "m.csv"), 16, cache=False)
    with pytest.raises(PetkitError, match="cannot decode image .*bad.jpg.*") as info:
        list(store.batches([[0]]))
    assert "petkit prepare" in info.value.hint


def test_process_decoding_equals_threads_and_reports_bad_images(pets_dir, tmp_path):
    import shutil

    from petkit.data import manifest as mf
    from petkit.data.sources import open_source

    manifest = open_source(pets_dir)
    by_threads = torch.cat([b for _, b in ImageStore(manifest, 32, cache=False, num_workers=2).batches(sequential(len(manifest), 7))])
    by_processes = torch.cat([b for _, b in ImageStore(manifest, 32, cache=False, num_workers=3).batches(sequential(len(manifest), 7))])
    assert torch.equal(by_threads, by_processes)
    shutil.copy(manifest.abspath(manifest.rows[0]), tmp_path / "good.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    broken = mf.Manifest(tmp_path, [{mf.PATH: "good.jpg", mf.IDENTITY: "a"}, {mf.PATH: "bad.jpg", mf.IDENTITY: "a"}])
    with pytest.raises(PetkitError, match="cannot decode image") as caught:
        list(ImageStore(broken, 32, cache=False, num_workers=3).batches([[0], [1]]))
    assert "petkit prepare" in caught.value.hint
