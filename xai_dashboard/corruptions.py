"""Common corruptions of Hendrycks & Dietterich (ICLR 2019, "CIFAR-10-C"), as pure seeded functions.

The registry :data:`CORRUPTIONS` (name -> :class:`Corruption`, names in snake case as in the
reference's file names) holds the 14 corruptions that need no external asset: the noises, colour
and digital ones here, the blurs, elastic transform and fog in :mod:`.corruptions_blur`. Left out:
glass blur (a sequential pixel-swapping loop), snow and frost (ImageMagick and frost photographs).

:func:`corrupt` takes uint8 images ``(N, H, W, 3)`` and a severity 1-5 and returns uint8 images of the
same shape. Each image's randomness comes from its own generator,
``numpy.random.default_rng([seed, key, crc32(name), severity])`` with ``key`` the image's key (its test
index), so an image's corruption is the same in any batch: the dashboard regenerates one image and
gets exactly what the stress test evaluated.

Parameters are the reference's for 32x32 images (``make_cifar_c.py``). The result is stored as the
reference stores it, ``np.uint8(clip(x, 0, 1) * 255)``, which truncates. Other image sizes: noise,
colour, JPEG, zoom factors and the pixelation ratio are relative and unchanged; Gaussian and defocus
blur radii and motion blur length scale with ``side / 32`` (``side`` = the shorter image side), the
elastic transform's parameters are the reference's fractions of ``side``, and the fog's plasma fractal
is drawn at the next power of two and cropped, as the reference's ImageNet variant does (256 -> 224).
"""
from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from . import corruptions_blur as blur

SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE = ("Hendrycks & Dietterich, Benchmarking Neural Network Robustness to Common Corruptions "
             "and Perturbations, ICLR 2019")


@dataclass(frozen=True)
class Corruption:
    name: str
    family: str        # "noise", "blur", "weather" or "digital", as in the reference's grouping
    random: bool       # draws from the per-image generators (different seeds give different images)
    # (uint8 (N, H, W, 3), severity 1..5, one numpy Generator per image) -> float in [0, 1] or uint8
    fn: Callable[[np.ndarray, int, list], np.ndarray]


def unit(x: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]."""
    return x.astype(np.float32) / 255


def _per_image(rngs: list, draw: Callable[[np.random.Generator], np.ndarray]) -> np.ndarray:
    """``draw(rng)`` for each image's generator, stacked: ``(N, ...)``."""
    return np.stack([draw(rng) for rng in rngs])


# ------------------------------------------------------------------------------------------------ noise

def gaussian_noise(x, severity, rngs):
    c = [0.04, 0.06, .08, .09, .10][severity - 1]
    return unit(x) + _per_image(rngs, lambda r: r.normal(scale=c, size=x.shape[1:]).astype(np.float32))


def shot_noise(x, severity, rngs):
    """Poisson photon counts with ``c`` photons at full intensity, rescaled."""
    c = [500, 250, 100, 75, 50][severity - 1]
    lam = unit(x).astype(np.float64) * c
    return np.stack([r.poisson(lam[i]) for i, r in enumerate(rngs)]).astype(np.float32) / c


def impulse_noise(x, severity, rngs):
    """Salt and pepper (scikit-image's ``random_noise(mode='s&p')``): each channel value is replaced
    with probability ``c`` by 0 or 1, equally likely."""
    c = [.01, .02, .03, .05, .07][severity - 1]
    u = _per_image(rngs, lambda r: r.random((2, *x.shape[1:]), dtype=np.float32))
    out = unit(x)
    flipped = u[:, 0] < c
    out[flipped] = (u[:, 1][flipped] < 0.5).astype(np.float32)
    return out


# ------------------------------------------------------------------------------------------------ colour

def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """float ``(..., 3)`` in [0, 1] -> hue, saturation, value in [0, 1] (the hexcone model)."""
    v = rgb.max(-1)
    delta = v - rgb.min(-1)
    s = np.divide(delta, v, out=np.zeros_like(v), where=v > 0)
    safe = np.where(delta > 0, delta, 1)
    r, g, b = np.moveaxis(rgb, -1, 0)
    h = np.where(b == v, 4 + (r - g) / safe, np.where(g == v, 2 + (b - r) / safe, (g - b) / safe))
    h = np.where(delta > 0, (h / 6) % 1, 0)
    return np.stack([h, s, v], -1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """The inverse of :func:`rgb_to_hsv`."""
    h, s, v = np.moveaxis(hsv, -1, 0)
    sector = np.floor(h * 6)
    f = h * 6 - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sector = sector.astype(np.int64) % 6
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]  # (r, g, b) per sector
    return np.stack([np.choose(sector, [row[ch] for row in table]) for ch in range(3)], -1)


def brightness(x, severity, rngs):
    c = [.05, .1, .15, .2, .3][severity - 1]
    hsv = rgb_to_hsv(unit(x))
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return hsv_to_rgb(hsv)


def saturate(x, severity, rngs):
    a, b = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]
    hsv = rgb_to_hsv(unit(x))
    hsv[..., 1] = np.clip(hsv[..., 1] * a + b, 0, 1)
    return hsv_to_rgb(hsv)


def contrast(x, severity, rngs):
    """Each channel pulled towards its image mean: ``(x - mean) * c + mean``."""
    c = [.75, .5, .4, .3, 0.15][severity - 1]
    x = unit(x)
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * c + means


# ------------------------------------------------------------------------------------------------ digital

def jpeg_compression(x, severity, rngs):
    quality = [80, 65, 58, 50, 40][severity - 1]
    out = np.empty_like(x)
    for i, image in enumerate(x):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=quality)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def pixelate(x, severity, rngs):
    """Box-downsampled to ``int(side * c)`` and box-upsampled back (Pillow's BOX filter, as the reference)."""
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[1:3]
    small = (int(w * c), int(h * c))
    out = np.empty_like(x)
    for i, image in enumerate(x):
        out[i] = np.asarray(Image.fromarray(image).resize(small, Image.Resampling.BOX)
                            .resize((w, h), Image.Resampling.BOX))
    return out


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("gaussian_noise", "noise", True, gaussian_noise),
    Corruption("shot_noise", "noise", True, shot_noise),
    Corruption("impulse_noise", "noise", True, impulse_noise),
    Corruption("defocus_blur", "blur", False, blur.defocus_blur),
    Corruption("gaussian_blur", "blur", False, blur.gaussian_blur),
    Corruption("motion_blur", "blur", True, blur.motion_blur),
    Corruption("zoom_blur", "blur", False, blur.zoom_blur),
    Corruption("fog", "weather", True, blur.fog),
    Corruption("brightness", "weather", False, brightness),
    Corruption("contrast", "digital", False, contrast),
    Corruption("saturate", "digital", False, saturate),
    Corruption("elastic_transform", "digital", True, blur.elastic_transform),
    Corruption("pixelate", "digital", False, pixelate),
    Corruption("jpeg_compression", "digital", False, jpeg_compression),
)}


def generators(name: str, severity: int, keys, seed: int = 0) -> list[np.random.Generator]:
    """One generator per image key ``(N,)``, independent of the batch the image is in."""
    tag = zlib.crc32(name.encode())
    return [np.random.default_rng([int(seed), int(k), tag, int(severity)]) for k in np.asarray(keys).tolist()]


def corrupt(images: np.ndarray, name: str, severity: int, *, seed: int = 0, keys=None) -> np.ndarray:
    """Corruption ``name`` at ``severity`` (1-5) of uint8 ``images`` ``(N, H, W, 3)`` -> uint8 ``(N, H, W, 3)``.

    ``keys`` ``(N,)`` (default ``0 .. N-1``) name the images: image ``i`` is corrupted with the generator
    of ``(seed, keys[i], name, severity)``, so the result for an image depends on nothing else.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
    keys = np.arange(len(images)) if keys is None else np.asarray(keys)
    if len(keys) != len(images):
        raise ValueError(f"{len(keys)} keys for {len(images)} images")
    spec = CORRUPTIONS[name]
    rngs = generators(name, severity, keys, seed) if spec.random else []
    out = spec.fn(images, severity, rngs)
    if out.dtype == np.uint8:
        return out
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)  # truncates, as the reference's np.uint8(...)
