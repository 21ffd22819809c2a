"""Preprocessing that travels with the weights.

The trainer and the dashboard both turn an arbitrary image into the network's
input with these functions, driven only by ``meta.json`` (input size,
channels, mean, std), so an uploaded photo is treated exactly like the
training images were.

Large images are shrunk before anything copies them: JPEGs decode straight
at 1/2, 1/4 or 1/8 scale (``draft``), other formats are box-reduced by a whole
factor (``reduce``), and 16-bit greyscale is rescaled to 8 bits strip by
strip. Each keeps at least ``KEEP`` (8) times the input size: the final
bilinear resize then gives what a direct resize of the full image would (within
1 grey level on photos; at 2x it was off by up to 28). :func:`decode_bytes` is what the whole pipeline
may hold at once, for callers that budget memory before decoding.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:  # torch is imported by whoever hands us tensors; decoding an image needs none
    import torch

DEEP_GREY = ("I;16", "I;16B", "I;16L", "I")  # 16/32-bit greyscale, rescaled to 8 bits
KEEP = 8  # shrink the shorter side to no less than KEEP x the input size (see above)
_STRIP_ROWS = 256  # input rows per strip when rescaling deep greyscale: ~7 MB for 7000 px wide


def decode_bytes(mode: str, size: tuple[int, int]) -> int:
    """Peak bytes :func:`pil_to_array` holds for a ``mode`` image of ``size`` = (W, H) pixels (after ``draft``).

    Pillow stores "1", "L" and "P" in 1 byte a pixel, "I;16*" in 2 and every other mode in 4
    (3-band images are padded). On top of the decoded image: palette images are expanded to RGBA
    at full size (averaging palette indices is meaningless), bilevel to L, and ``reduce()`` makes
    a premultiplied full-size copy of images with alpha; deep greyscale is converted in strips.
    """
    w, h = size
    storage = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    extra = {"P": 8, "PA": 8, "LA": 4, "RGBA": 4, "1": 1}.get(mode, 0)
    return w * h * (storage + extra)


def draft_for(img: Image.Image, size: int, in_channels: int = 3) -> Image.Image:
    """Ask a not-yet-decoded JPEG to decode at the smallest DCT scale that keeps both sides >= KEEP x ``size``
    (and straight to greyscale for one-channel runs). A no-op for other formats and loaded images."""
    img.draft("L" if in_channels == 1 else img.mode, (KEEP * size, KEEP * size))
    return img


def _deep_grey_to_l(img: Image.Image, factor: int) -> Image.Image:
    """16/32-bit greyscale ``(H, W)`` -> 8-bit L ``(ceil(H / factor), ceil(W / factor))``.

    Scaled so the brightest pixel is 255 (values <= 255 are kept), like a viewer would show it,
    instead of Pillow's clipping. Works on strips of about 256 rows (a multiple of ``factor``, so
    strip-wise reduce equals whole-image reduce): besides the decoded image only a few MB are ever
    allocated (the whole-image float64 copy this replaces took 8 bytes a pixel).
    """
    hi = max(int(img.getextrema()[1]), 255)
    w, h = img.size
    rows = factor * max(1, _STRIP_ROWS // factor)
    out = []
    for top in range(0, h, rows):
        strip = img.crop((0, top, w, min(h, top + rows))).convert("I")  # "I;16" cannot be reduced
        if factor > 1:
            strip = strip.reduce(factor)
        arr = np.asarray(strip, dtype=np.int64).clip(0, None)
        out.append((arr * 255 // hi).astype(np.uint8))
    return Image.fromarray(np.concatenate(out))


def shrink(img: Image.Image, size: int, in_channels: int = 3) -> Image.Image:
    """Decode ``img`` no larger than needed: draft, deep greyscale -> L, palette -> RGB(A), and a
    whole-factor ``reduce`` that keeps the shorter side >= KEEP x ``size``. Mode otherwise unchanged."""
    img = draft_for(img, size, in_channels)
    factor = max(1, min(img.size) // (KEEP * size))
    if img.mode in DEEP_GREY:
        return _deep_grey_to_l(img, factor)
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    # reduce() premultiplies alpha for LA/RGBA, so compositing over white afterwards is unchanged
    return img.reduce(factor) if factor > 1 else img


def pil_to_array(img: Image.Image, size: int, in_channels: int = 3) -> np.ndarray:
    """Any PIL image -> uint8 numpy ``(C, size, size)``.

    Shrinks it first (:func:`shrink`), applies EXIF orientation, composites
    transparency over white, converts to RGB or L, resizes the shorter side to
    ``size`` and centre-crops.
    """
    img = ImageOps.exif_transpose(shrink(img, size, in_channels))  # reduce() keeps info, EXIF included
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    img = img.convert("RGB" if in_channels == 3 else "L")
    img = ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR, centering=(0.5, 0.5))
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr.transpose(2, 0, 1).copy()  # a copy: np.asarray(PIL image) is read-only


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> float32 normalised ``(N, C, H, W)`` on ``x``'s device."""
    x = x.float() / 255.0
    m = x.new_tensor(mean).view(1, -1, 1, 1)  # new_tensor: same dtype and device as x
    s = x.new_tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Inverse of :func:`normalize`, returning float images in [0, 1]."""
    m = x.new_tensor(mean).view(1, -1, 1, 1)
    s = x.new_tensor(std).view(1, -1, 1, 1)
    return (x * s + m).clamp(0, 1)
