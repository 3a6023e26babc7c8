"""Reading images: every mode (grayscale PGM, palette PNG, RGBA, 16-bit) becomes 8-bit RGB.

Photos as they come: JPEG, PNG, WebP, AVIF (Pillow's own plugin), HEIC/HEIF from phones (through
``pillow-heif``, registered here), TIFF, BMP, GIF, PGM. The EXIF orientation is applied before
anything else (a phone stores portrait photos as rotated landscape pixels plus a tag), and a
manifest's optional ``bbox`` (x, y, w, h in pixels of the photo as displayed) is cropped before the
resize.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from petkit.errors import PetkitError

try:  # HEIC/HEIF (iPhone photos); a missing plugin makes those files "cannot decode" with a hint
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF = True
except ImportError:  # pragma: no cover - pillow-heif is a dependency
    HEIF = False

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pbm", ".bmp", ".webp", ".tif", ".tiff", ".gif",
                  ".heic", ".heif", ".avif"}

# which PIL formats each suffix may honestly hold
SUFFIX_FORMATS = {
    ".jpg": {"JPEG", "MPO"}, ".jpeg": {"JPEG", "MPO"}, ".png": {"PNG"}, ".pgm": {"PPM"},
    ".ppm": {"PPM"}, ".pbm": {"PPM"}, ".bmp": {"BMP"}, ".webp": {"WEBP"}, ".tif": {"TIFF"},
    ".tiff": {"TIFF"}, ".gif": {"GIF"}, ".heic": {"HEIF"}, ".heif": {"HEIF"}, ".avif": {"AVIF", "HEIF"},
}
# only these decoders ever run: Pillow would otherwise also try EPS (which runs Ghostscript), PSD, ICNS...
# on any file, whatever its name says
FORMATS = sorted(set().union(*SUFFIX_FORMATS.values()))


@functools.cache
def _decoders() -> tuple[str, ...]:
    """FORMATS that this Pillow can open (Image.open raises KeyError for a format it has no plugin for)."""
    Image.init()
    return tuple(f for f in FORMATS if f in Image.OPEN)

ROTATED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
FULL_SIZE = "petkit_full_size"  # image.info key: the stored size before a reduced-scale JPEG decode


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


# The one size rule for 'prepare' (which leaves such files out) and every reader (which refuses
# them): PIL's own decompression-bomb limit, about 89 Mpx (a 12000 x 12000 PNG of a few KB
# would otherwise take 430 MB to decode, per image, per worker).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class TooLarge(PetkitError):
    """An image refused by the size rule (not a decoding failure)."""


def too_large(size: tuple[int, int], max_pixels: int | None = None) -> str | None:
    """Why an image of ``size`` (width, height) is refused, or None."""
    limit = min(max_pixels or MAX_PIXELS, MAX_PIXELS)
    if size[0] * size[1] > limit:
        return f"{size[0]}x{size[1]} pixels exceeds the {limit / 1e6:.0f} Mpx limit (decompression-bomb guard)"
    return None


@contextlib.contextmanager
def opened(path: str | Path | BinaryIO, min_size: int | None = None, bbox: tuple[float, float, float, float] | None = None,
           max_pixels: int | None = None, name: str | None = None) -> Iterator[Image.Image]:
    """The image, fully decoded (so truncation surfaces here), after the size rule; PIL's errors as PetkitError.

    ``path`` may be an open binary file (an upload), named ``name`` in messages; ``max_pixels``: a
    stricter size rule than :data:`MAX_PIXELS`.

    ``min_size``: the caller will shrink the image (or its ``bbox``) to this side anyway, so a JPEG
    may be decoded at a reduced scale in the DCT domain (1/2, 1/4, 1/8), never below ``min_size``:
    several times faster than a full decode followed by a resize.
    """
    label = name or path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=_decoders()) as image:
                reason = too_large(image.size, max_pixels)
                if reason:
                    raise TooLarge(f"image {label} is refused: {reason}", "shrink it, or leave it out ('petkit prepare' does)")
                image.info[FULL_SIZE] = image.size  # before draft may shrink it
                if min_size and image.format == "JPEG":
                    if bbox:  # the box, not the photo, must keep min_size pixels
                        scale = min_size / max(1.0, min(bbox[2], bbox[3]))
                        image.draft("RGB", (int(image.size[0] * scale + 1), int(image.size[1] * scale + 1)))
                    else:
                        image.draft("RGB", (min_size, min_size))
                image.load()
                yield image
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:  # PIL's check at open, same limit
        raise TooLarge(f"image {label} is refused: {exc}", "shrink it, or leave it out ('petkit prepare' does)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        hint = "re-run 'petkit prepare' to exclude unreadable files from the manifest"
        if isinstance(path, (str, Path)) and Path(path).suffix.lower() in (".heic", ".heif") and not HEIF:
            hint = "HEIC photos need the pillow-heif package: pip install pillow-heif"
        detail = str(exc) if isinstance(path, (str, Path)) else str(exc).replace(f" {path!r}", "").replace(f" {path}", "")
        raise PetkitError(f"cannot decode image {label}: {detail}", hint) from exc


def displayed_size(image: Image.Image, stored: tuple[int, int] | None = None) -> tuple[int, int]:
    """(width, height) as the photo is shown, after its EXIF orientation (``stored``: the size before a draft decode)."""
    width, height = stored or image.size
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block: shown as stored
        orientation = 1
    return (height, width) if orientation in ROTATED_ORIENTATIONS else (width, height)


def bbox_problem(bbox: tuple[float, float, float, float], size: tuple[int, int]) -> str | None:
    """Why ``bbox`` (x, y, w, h) cannot be cropped from an image of ``size`` (as displayed), or None."""
    x, y, w, h = bbox
    if x >= size[0] or y >= size[1] or x + w <= 0 or y + h <= 0:
        return f"bbox {x:g},{y:g},{w:g},{h:g} lies outside the {size[0]}x{size[1]} image"
    return None


def open_rgb(path: str | Path | BinaryIO, min_size: int | None = None, bbox: tuple[float, float, float, float] | None = None,
             max_pixels: int | None = None, name: str | None = None) -> Image.Image:
    """Decode fully and return an RGB image, EXIF-rotated, cropped to ``bbox`` (see :func:`opened`).

    The box is in pixels of the full-size photo as displayed; a box that runs over an edge is clipped.
    """
    with opened(path, min_size, bbox, max_pixels, name) as image:
        full = displayed_size(image, image.info.get(FULL_SIZE))
        rotated = ImageOps.exif_transpose(image)
        if bbox is not None:
            problem = bbox_problem(bbox, full)
            if problem:
                raise PetkitError(f"image {path}: {problem}", "fix the bbox column of the manifest (x,y,w,h in pixels)")
            sx, sy = rotated.width / full[0], rotated.height / full[1]  # the JPEG may have been decoded at 1/2, 1/4, 1/8
            x, y, w, h = bbox
            box = (max(0, round(x * sx)), max(0, round(y * sy)), min(rotated.width, round((x + w) * sx)), min(rotated.height, round((y + h) * sy)))
            rotated = rotated.crop(box)
        return _to_rgb(rotated)


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


def load_tensor(path: str | Path, size: int, bbox: tuple[float, float, float, float] | None = None) -> torch.Tensor:
    """uint8 CHW tensor of the image (or its ``bbox``) resized to ``size`` x ``size`` (aligned crops: no aspect crop)."""
    return to_tensor(open_rgb(path, min_size=size, bbox=bbox), size)


def to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """uint8 CHW tensor of an RGB image resized to ``size`` x ``size``."""
    image = image.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
