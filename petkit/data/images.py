"""Reading images: every mode (grayscale PGM, palette PNG, RGBA, 16-bit) becomes 8-bit RGB."""

from __future__ import annotations

import warnings
from pathlib import Path

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


def open_rgb(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Decode fully (so truncation surfaces here) and return an RGB image, EXIF-rotated.

    ``min_size``: the caller will shrink the image to this side anyway, so a JPEG may be decoded
    at a reduced scale in the DCT domain (1/2, 1/4, 1/8), never below ``min_size``: several times
    faster than a full decode followed by a resize.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if min_size and image.format == "JPEG":
                    image.draft("RGB", (min_size, min_size))
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as exc:
        raise PetkitError(
            f"cannot decode image {path}: {exc}",
            "re-run 'petkit prepare' to exclude unreadable files from the manifest",
        ) from exc


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
