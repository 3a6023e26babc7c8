"""Photos as phones and datasets deliver them: HEIC, AVIF, WebP, EXIF orientation, face boxes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from petkit.data import manifest as mf
from petkit.data.images import load_tensor, open_rgb
from petkit.data.prepare import PrepareOptions, prepare
from petkit.errors import PetkitError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "dogfacenet-dev"


def photo(width: int = 120, height: int = 80) -> Image.Image:
    """An asymmetric picture: a rotation or a crop in the wrong place changes it."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, ((x // 20 + y // 20) % 2) * 255], axis=2).astype(np.uint8)
    rgb[5:25, 5:45] = (255, 255, 0)  # a yellow block near the top-left corner
    return Image.fromarray(rgb)


def real_photo() -> Image.Image:
    if SHARED.is_dir():
        first = sorted(p for p in SHARED.rglob("*.jpg"))[0]
        return Image.open(first).convert("RGB")
    # without ../shared: the synthetic picture softened as a camera would (its hard 1-px colour edges cost the
    # lossy codecs' chroma subsampling a mean error of 10-11 at 96 px, a photo's about 3)
    from PIL import ImageFilter

    return photo(224, 224).filter(ImageFilter.GaussianBlur(3))


@pytest.mark.parametrize("fmt,suffix", [("HEIF", ".heic"), ("AVIF", ".avif"), ("WEBP", ".webp")])
def test_modern_formats_decode_to_the_same_picture(tmp_path, fmt, suffix):
    image = real_photo().resize((96, 96))
    path = tmp_path / f"dog{suffix}"
    image.save(path, fmt, quality=95)
    decoded = np.asarray(open_rgb(path), dtype=np.float32)
    assert decoded.shape == (96, 96, 3)
    assert np.abs(decoded - np.asarray(image, dtype=np.float32)).mean() < 8  # lossy codecs, same picture


@pytest.mark.parametrize("orientation,transpose", [(6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90),
                                                  (3, Image.Transpose.ROTATE_180), (2, Image.Transpose.FLIP_LEFT_RIGHT)])
def test_exif_orientation_is_applied_first(tmp_path, orientation, transpose):
    stored = real_photo().resize((160, 100))
    exif = Image.Exif()
    exif[0x0112] = orientation
    tagged, upright = tmp_path / "tagged.jpg", tmp_path / "upright.png"
    stored.save(tagged, "JPEG", quality=98, exif=exif.tobytes())
    shown = Image.open(tagged)
    shown.load()
    stored_pixels = shown.convert("RGB")  # what a reader that ignores the tag would use
    stored_pixels.transpose(transpose).save(upright)
    assert open_rgb(tagged).size == stored_pixels.transpose(transpose).size
    a, b = load_tensor(tagged, 64).float(), load_tensor(upright, 64).float()
    assert (a - b).abs().mean() < 2.0
    if orientation != 3:  # a tag ignored would give a visibly different picture
        assert (load_tensor(upright, 64).float() - torch.from_numpy(np.array(stored_pixels.resize((64, 64)))).permute(2, 0, 1).float()).abs().mean() > 10


def test_bbox_is_cropped_before_resizing_also_after_exif_and_draft(tmp_path):
    big = photo(1600, 1200)
    path = tmp_path / "big.jpg"
    big.save(path, "JPEG", quality=98)
    box = (100, 50, 400, 300)
    expected = big.crop((100, 50, 500, 350)).resize((64, 64), Image.BICUBIC)
    got = load_tensor(path, 64, box).permute(1, 2, 0).numpy().astype(np.float32)
    # decoded at a reduced DCT scale (the box needs 64 px of 300): the same region, not another one
    assert np.abs(got - np.asarray(expected, dtype=np.float32)).mean() < 6
    # portrait phone photo: the box is in displayed pixels
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated_path = tmp_path / "portrait.jpg"
    big.transpose(Image.Transpose.ROTATE_90).save(rotated_path, "JPEG", quality=98, exif=exif.tobytes())  # displayed: big again
    got = load_tensor(rotated_path, 64, box).permute(1, 2, 0).numpy().astype(np.float32)
    assert np.abs(got - np.asarray(expected, dtype=np.float32)).mean() < 6
    with pytest.raises(PetkitError, match="outside"):
        load_tensor(path, 64, (1700, 10, 50, 50))


def test_manifest_bbox_values_are_checked(tmp_path):
    photo().save(tmp_path / "a.png")
    good = tmp_path / "good.csv"
    good.write_text('path,identity,bbox\na.png,rex,"10,5,40,30"\na.png,rex,\n')
    manifest = mf.read_manifest(good)
    assert manifest.bboxes() == [(10.0, 5.0, 40.0, 30.0), None]
    for bad in ('"10,5,40"', '"a,b,c,d"', '"10,5,0,30"', '"-1,5,10,10"', '"nan,1,2,3"'):
        path = tmp_path / "bad.csv"
        path.write_text(f"path,identity,bbox\na.png,rex,{bad}\n")
        with pytest.raises(PetkitError, match="line 2: bbox"):
            mf.read_manifest(path)


def test_prepare_keeps_boxes_and_leaves_out_a_box_outside_its_photo(tmp_path):
    for i, name in enumerate("abcd"):
        photo(120 + i).save(tmp_path / f"{name}.png")  # four different photos (identical ones would be merged)
    listing = tmp_path / "listing.csv"
    listing.write_text('path,identity,bbox\na.png,rex,"10,5,40,30"\nb.png,rex,"0,0,60,60"\nc.png,max,"500,5,40,30"\nd.png,max,"1,1,50,50"\n')
    result = prepare(listing, tmp_path / "out", PrepareOptions(ratios=(1.0, 0.0, 0.0)))
    rows = mf.read_manifest(result.manifest_path).rows
    assert sorted(r[mf.BBOX] for r in rows) == ["0,0,60,60", "1,1,50,50", "10,5,40,30"]
    assert result.report["excluded"] == [{"path": "c.png", "reason": "bbox 500,5,40,30 lies outside the 122x80 image"}]


def test_training_batches_use_the_box(tmp_path):
    from petkit.data.batches import ImageStore

    image = photo(200, 100)
    image.save(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text('path,identity,bbox\na.png,rex,"5,5,40,20"\na.png,rex,\n')
    store = ImageStore(mf.read_manifest(tmp_path / "m.csv"), 32, cache=True)
    (_, cropped), = store.batches([[0]])
    assert cropped.shape == (1, 3, 32, 32)
    assert cropped[0, :2].float().mean(dim=(1, 2)).min() > 200  # the yellow block fills the crop
    assert not torch.equal(store.images[0], store.images[1])


def test_a_heic_listing_prepares_and_embeds_like_any_photo(tmp_path):
    for i in range(2):
        buffer = io.BytesIO()
        photo(120 + 8 * i).save(buffer, "HEIF")
        folder = tmp_path / "photos" / f"dog{i}"
        folder.mkdir(parents=True)
        (folder / "IMG_0001.HEIC").write_bytes(buffer.getvalue())
    result = prepare(tmp_path / "photos", tmp_path / "out", PrepareOptions(ratios=(1.0, 0.0, 0.0)))
    rows = mf.read_manifest(result.manifest_path).rows
    assert len(rows) == 2 and all(r[mf.PATH].endswith(".HEIC") for r in rows)
