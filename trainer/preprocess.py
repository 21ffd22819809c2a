"""Preprocessing that travels with the weights.

The trainer and the dashboard both turn an arbitrary image into the network's
input with these functions, driven only by ``meta.json`` (input size,
channels, mean, std), so an uploaded photo is treated exactly like the
training images were.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:  # torch is imported by whoever hands us tensors; decoding an image needs none
    import torch


def pil_to_array(img: Image.Image, size: int, in_channels: int = 3) -> np.ndarray:
    """Any PIL image -> uint8 numpy ``(C, size, size)``.

    Applies EXIF orientation, converts the mode (RGBA over white, palette,
    16-bit, greyscale) to RGB or L, resizes the shorter side to ``size`` and
    centre-crops.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: rescale to 8 bits instead of letting PIL clip.
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 255 else 255.0
        img = Image.fromarray((arr * (255.0 / hi)).clip(0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
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
