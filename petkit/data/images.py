"""Reading images: every mode (grayscale PGM, palette PNG, RGBA, 16-bit) becomes 8-bit RGB."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from petkit.errors import PetkitError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pbm", ".bmp", ".webp", ".tif", ".tiff", ".gif"}

# which PIL formats each suffix may honestly hold
SUFFIX_FORMATS = {
    ".jpg": {"JPEG", "MPO"}, ".jpeg": {"JPEG", "MPO"}, ".png": {"PNG"}, ".pgm": {"PPM"},
    ".ppm": {"PPM"}, ".pbm": {"PPM"}, ".bmp": {"BMP"}, ".webp": {"WEBP"}, ".tif": {"TIFF"},
    ".tiff": {"TIFF"}, ".gif": {"GIF"},
}


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


# The one size rule for 'prepare' (which leaves such files out) and every reader (which refuses
# them): PIL's own decompression-bomb limit, about 89 Mpx (a 12000 x 12000 PNG of a few KB
# would otherwise take 430 MB to decode, per image, per worker).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class TooLarge(PetkitError):
    """An image refused by the size rule (not a decoding failure)."""


def too_large(size: tuple[int, int]) -> str | None:
    """Why an image of ``size`` (width, height) is refused, or None."""
    if size[0] * size[1] > MAX_PIXELS:
        return f"{size[0]}x{size[1]} pixels exceeds the {MAX_PIXELS / 1e6:.0f} Mpx limit (decompression-bomb guard)"
    return None


@contextlib.contextmanager
def opened(path: str | Path, min_size: int | None = None) -> Iterator[Image.Image]:
    """The image, fully decoded (so truncation surfaces here), after the size rule; PIL's errors as PetkitError.

    ``min_size``: the caller will shrink the image to this side anyway, so a JPEG may be decoded
    at a reduced scale in the DCT domain (1/2, 1/4, 1/8), never below ``min_size``: several times
    faster than a full decode followed by a resize.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                reason = too_large(image.size)
                if reason:
                    raise TooLarge(f"image {path} is refused: {reason}", "shrink it, or leave it out ('petkit prepare' does)")
                if min_size and image.format == "JPEG":
                    image.draft("RGB", (min_size, min_size))
                image.load()
                yield image
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:  # PIL's check at open, same limit
        raise TooLarge(f"image {path} is refused: {exc}", "shrink it, or leave it out ('petkit prepare' does)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise PetkitError(
            f"cannot decode image {path}: {exc}",
            "re-run 'petkit prepare' to exclude unreadable files from the manifest",
        ) from exc


def open_rgb(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Decode fully and return an RGB image, EXIF-rotated (see :func:`opened`)."""
    with opened(path, min_size) as image:
        return _to_rgb(ImageOps.exif_transpose(image))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        span = max(array.max() - array.min(), 1.0)
        image = Image.fromarray(((array - array.min()) / span * 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, (0, 0, 0))
        rgba = image.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def load_tensor(path: str | Path, size: int) -> torch.Tensor:
    """uint8 CHW tensor of the image resized to ``size`` x ``size`` (aligned crops: no aspect crop)."""
    image = open_rgb(path, min_size=size).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
