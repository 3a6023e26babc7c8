"""Procedural synthetic pets: the embedded default dataset of the demo and the tests.

Each identity is a fixed set of traits (coat colours, pattern, markings, ear shape, eye
colour); each image draws that face in a new pose, scale and position, under new lighting,
over a new cluttered background, with noise and sometimes an occluder. The nuisances are
strong enough that an untrained network matches poorly and training has something to learn:
identity lives in the pattern and markings, not in the raw colours of the picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from petkit.errors import PetkitError
from petkit.limits import NonNegativeInt, Range, checked

PATTERNS = ("solid", "stripes", "spots", "patches", "mask")
MARKINGS = ("none", "blaze", "eye_patch_left", "eye_patch_right", "white_muzzle", "ear_tips")
EARS = ("pointed", "round", "floppy")
COAT_PALETTE = np.array([
    [30, 25, 22], [95, 60, 35], [170, 110, 60], [220, 170, 110], [240, 235, 225],
    [130, 130, 135], [200, 120, 40], [70, 70, 80], [160, 140, 120], [110, 80, 60],
], dtype=np.float64)
EYE_PALETTE = np.array([[60, 140, 60], [180, 140, 30], [70, 110, 190], [120, 70, 30], [200, 200, 60]], dtype=np.float64)


@dataclass(frozen=True)
class Traits:
    base: tuple[int, int, int]
    second: tuple[int, int, int]
    pattern: str
    pattern_angle: float
    pattern_freq: float
    blobs: tuple[tuple[float, float, float], ...]  # (x, y, radius) in head units
    marking: str
    ears: str
    ear_size: float
    eye: tuple[int, int, int]
    eye_gap: float
    head_aspect: float


def make_traits(rng: np.random.Generator) -> Traits:
    i, j = rng.choice(len(COAT_PALETTE), size=2, replace=False)
    jitter = lambda c: tuple(int(v) for v in np.clip(c + rng.normal(0, 12, 3), 0, 255))  # noqa: E731
    blobs = tuple(
        (float(rng.uniform(-0.7, 0.7)), float(rng.uniform(-0.7, 0.7)), float(rng.uniform(0.12, 0.35)))
        for _ in range(int(rng.integers(3, 7)))
    )
    return Traits(
        base=jitter(COAT_PALETTE[i]), second=jitter(COAT_PALETTE[j]),
        pattern=str(rng.choice(PATTERNS)), pattern_angle=float(rng.uniform(0, math.pi)),
        pattern_freq=float(rng.uniform(3, 7)), blobs=blobs, marking=str(rng.choice(MARKINGS)),
        ears=str(rng.choice(EARS)), ear_size=float(rng.uniform(0.3, 0.55)),
        eye=jitter(EYE_PALETTE[rng.integers(len(EYE_PALETTE))]), eye_gap=float(rng.uniform(0.28, 0.45)),
        head_aspect=float(rng.uniform(0.85, 1.15)),
    )


def render(traits: Traits, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """One photo of the individual: pose, background, lighting, noise and occluders vary."""
    scale = 2  # draw large, then downsample: cheap anti-aliasing
    canvas = size * scale
    face = _draw_face(traits, canvas)
    angle = float(rng.uniform(-25, 25))
    zoom = float(rng.uniform(0.75, 1.0))
    face = face.rotate(angle, resample=Image.BICUBIC, expand=False)
    side = int(canvas * zoom)
    face = face.resize((side, side), Image.BICUBIC)
    image = _background(rng, canvas)
    offset = canvas - side
    x = int(offset / 2 + rng.uniform(-0.08, 0.08) * canvas)
    y = int(offset / 2 + rng.uniform(-0.08, 0.08) * canvas)
    image.paste(face, (x, y), face)
    if rng.random() < 0.3:
        _occlude(image, rng, canvas)
    image = image.resize((size, size), Image.BILINEAR)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    return _light_and_noise(image, rng)


def _draw_face(t: Traits, canvas: int) -> Image.Image:
    face = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    draw = ImageDraw.Draw(face)
    c, r = canvas / 2, canvas * 0.3
    rx, ry = r * t.head_aspect, r / t.head_aspect
    _draw_ears(draw, t, c, rx, ry)
    head_box = (c - rx, c - ry, c + rx, c + ry)
    draw.ellipse(head_box, fill=t.base + (255,))
    mask = Image.new("L", face.size, 0)
    ImageDraw.Draw(mask).ellipse(head_box, fill=255)
    pattern = _pattern_layer(t, canvas, c, rx, ry)
    face.paste(pattern, (0, 0), Image.composite(pattern.getchannel("A"), Image.new("L", face.size, 0), mask))
    _draw_marking(draw, t, c, rx, ry)
    for side in (-1, 1):  # eyes, then pupils
        ex, ey, er = c + side * t.eye_gap * rx, c - 0.15 * ry, 0.13 * r
        draw.ellipse((ex - er, ey - er * 0.8, ex + er, ey + er * 0.8), fill=t.eye + (255,))
        draw.ellipse((ex - er * 0.35, ey - er * 0.7, ex + er * 0.35, ey + er * 0.7), fill=(10, 10, 10, 255))
    nose = 0.09 * r
    draw.polygon([(c - nose, c + 0.25 * ry), (c + nose, c + 0.25 * ry), (c, c + 0.25 * ry + nose)], fill=(40, 20, 25, 255))
    return face


def _draw_ears(draw: ImageDraw.ImageDraw, t: Traits, c: float, rx: float, ry: float) -> None:
    size = t.ear_size * rx * 2
    for side in (-1, 1):
        base_x = c + side * rx * 0.6
        top = c - ry * 0.6
        if t.ears == "pointed":
            points = [(base_x - size * 0.4, top + size * 0.3), (base_x + size * 0.4, top + size * 0.3), (base_x + side * size * 0.2, top - size * 0.8)]
            draw.polygon(points, fill=t.base + (255,))
            tip = t.second if t.marking == "ear_tips" else t.base
            tip_x, tip_y = points[2]
            draw.polygon([points[2], (tip_x - size * 0.12, tip_y + size * 0.35), (tip_x + size * 0.12, tip_y + size * 0.35)], fill=tip + (255,))
        elif t.ears == "round":
            colour = t.second if t.marking == "ear_tips" else t.base
            draw.ellipse((base_x - size * 0.45, top - size * 0.6, base_x + size * 0.45, top + size * 0.3), fill=colour + (255,))
        else:  # floppy: hangs beside the head
            colour = t.second  # floppy ears are darker in every identity
            x0 = c + side * rx * 0.95
            draw.ellipse((x0 - size * 0.3, c - ry * 0.7, x0 + size * 0.3, c + ry * 0.3), fill=colour + (255,))


def _pattern_layer(t: Traits, canvas: int, c: float, rx: float, ry: float) -> Image.Image:
    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    colour = t.second + (255,)
    if t.pattern == "stripes":
        period = 2 * rx / t.pattern_freq
        dx, dy = math.cos(t.pattern_angle), math.sin(t.pattern_angle)
        for k in range(-12, 13):
            ox, oy = c + k * period * -dy, c + k * period * dx
            draw.line([(ox - dx * canvas, oy - dy * canvas), (ox + dx * canvas, oy + dy * canvas)], fill=colour, width=max(2, int(period * 0.35)))
    elif t.pattern in ("spots", "patches"):
        grow = 0.5 if t.pattern == "spots" else 1.6
        for bx, by, br in t.blobs:
            rad = br * rx * grow
            x, y = c + bx * rx, c + by * ry
            draw.ellipse((x - rad, y - rad, x + rad, y + rad), fill=colour)
    elif t.pattern == "mask":  # dark band across the eyes, as in many breeds
        draw.rectangle((c - rx, c - 0.35 * ry, c + rx, c + 0.05 * ry), fill=colour)
    return layer


def _draw_marking(draw: ImageDraw.ImageDraw, t: Traits, c: float, rx: float, ry: float) -> None:
    white = (245, 245, 240, 255)
    if t.marking == "blaze":
        draw.polygon([(c - 0.08 * rx, c - ry * 0.9), (c + 0.08 * rx, c - ry * 0.9), (c + 0.2 * rx, c + 0.3 * ry), (c - 0.2 * rx, c + 0.3 * ry)], fill=white)
    elif t.marking in ("eye_patch_left", "eye_patch_right"):
        side = -1 if t.marking == "eye_patch_left" else 1
        ex, ey = c + side * t.eye_gap * rx, c - 0.15 * ry
        draw.ellipse((ex - 0.3 * rx, ey - 0.3 * ry, ex + 0.3 * rx, ey + 0.3 * ry), fill=t.second + (255,) if t.second != t.base else white)
    elif t.marking == "white_muzzle":
        draw.ellipse((c - 0.45 * rx, c + 0.05 * ry, c + 0.45 * rx, c + 0.75 * ry), fill=white)


def _background(rng: np.random.Generator, canvas: int) -> Image.Image:
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, canvas)[:, None, None]
    grad = a * (1 - t) + b * t
    array = np.broadcast_to(grad, (canvas, canvas, 3))
    if rng.random() < 0.5:
        array = array.transpose(1, 0, 2)
    image = Image.fromarray(np.ascontiguousarray(array).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 5))):  # clutter
        x, y = rng.uniform(0, canvas, 2)
        w, h = rng.uniform(canvas * 0.05, canvas * 0.35, 2)
        fill = tuple(int(v) for v in rng.uniform(0, 255, 3))
        box = (x - w, y - h, x + w, y + h)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


def _occlude(image: Image.Image, rng: np.random.Generator, canvas: int) -> None:
    draw = ImageDraw.Draw(image)
    w, h = rng.uniform(canvas * 0.15, canvas * 0.35, 2)
    x, y = rng.uniform(canvas * 0.2, canvas * 0.8, 2)
    draw.rectangle((x - w / 2, y - h / 2, x + w / 2, y + h / 2), fill=tuple(int(v) for v in rng.uniform(0, 255, 3)))


def _light_and_noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    array = np.asarray(image, dtype=np.float64)
    h, w, _ = array.shape
    gain = rng.uniform(0.6, 1.3) * rng.uniform(0.8, 1.2, 3)  # exposure and colour cast
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w) - 0.5
    shade = 1 + rng.uniform(0, 0.6) * (np.cos(angle) * xx + np.sin(angle) * yy)
    array = array * gain * shade[..., None] + rng.normal(0, rng.uniform(2, 12), array.shape)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


@checked
def generate(
    out_dir: str | Path,
    identities: Annotated[int, Range(2, 100_000)] = 40,
    images_per_identity: Annotated[int, Range(1, 10_000)] = 12,
    size: Annotated[int, Range(16, 4096)] = 96,
    seed: NonNegativeInt = 0,
    progress: Callable[[int], None] | None = None,
    fakes_per_identity: Annotated[int, Range(0, 1000)] = 0,
) -> Path:
    """Write ``<out_dir>/pet_NNN/pet_NNN_MM.jpg`` (and ``pet_NNN/fake/pet_NNN_fake_MM.jpg``
    forgeries when ``fakes_per_identity`` > 0); the same seed gives the same pictures."""
    out_dir = Path(out_dir)
    if identities < 2 or images_per_identity < 2:
        raise PetkitError("a synthetic set needs at least 2 identities with 2 images each")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise PetkitError(f"{out_dir} exists and is not empty", "choose an empty or new folder")
    for identity in range(identities):
        traits = make_traits(np.random.default_rng([seed, identity]))
        folder = out_dir / f"pet_{identity:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(images_per_identity):
            image = render(traits, np.random.default_rng([seed, identity, k + 1]), size)
            image.save(folder / f"{folder.name}_{k:02d}.jpg", quality=92)  # names unique across identities
        if fakes_per_identity:
            _write_fakes(folder, traits, fakes_per_identity, size, [seed, identity])
        if progress:
            progress(1)
    return out_dir


def forge(traits: Traits, rng: np.random.Generator) -> Traits:
    """A look-alike: same coat and ears, but the details a forger gets wrong (marking, pattern
    layout, eye colour) differ, as a generated face keeps the gist and loses the specifics."""
    others = [m for m in MARKINGS if m != traits.marking]
    return replace(
        traits,
        marking=str(rng.choice(others)),
        pattern_angle=float(traits.pattern_angle + rng.uniform(0.6, 2.5)),
        blobs=tuple((float(rng.uniform(-0.7, 0.7)), float(rng.uniform(-0.7, 0.7)), r) for _, _, r in traits.blobs),
        eye=tuple(int(v) for v in EYE_PALETTE[rng.integers(len(EYE_PALETTE))]),
    )


def _write_fakes(folder: Path, traits: Traits, count: int, size: int, key: list[int]) -> None:
    fake_dir = folder / "fake"
    fake_dir.mkdir()
    for k in range(count):
        rng = np.random.default_rng([*key, 10_000 + k])
        render(forge(traits, rng), rng, size).save(fake_dir / f"{folder.name}_fake_{k:02d}.jpg", quality=92)
