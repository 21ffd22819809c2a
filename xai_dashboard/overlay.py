"""Heatmap rendering: colour-mapped maps blended over the image, as PNG bytes or data: URLs.

Blending happens at display size: the image is upscaled with
:func:`xai_dashboard.images.upscale` (crisp pixels) and the map bilinearly, so
a 32 px test image becomes a readable 256 px overlay.

A map in [0, 1] (relative: 1 is its own maximum) is drawn with a sequential colour map at a
fixed opacity. A signed map keeps its sign and magnitude: a diverging scale (:data:`DIVERGING`)
centred on zero over the symmetric range ``±max|a|`` (:func:`map_range`), with the opacity
growing with ``|a|`` so that zero leaves the image as it is.
"""
from __future__ import annotations

import base64
import functools

import numpy as np
from PIL import Image

from .images import DETAIL_SIZE, encode_png, to_hwc, upscale

COLORMAPS = ("Jet", "Turbo", "Viridis", "Inferno", "Hot")
DEFAULT_COLORMAP = "Jet"
DIVERGING = "RdBu_r"  # blue (against) - white (0) - red (for); for signed maps only


@functools.lru_cache(maxsize=16)
def colormap_lut(name: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Plotly colour scale ``name`` sampled at 256 points -> uint8 ``(256, 3)``."""
    from plotly.colors import get_colorscale, sample_colorscale, unlabel_rgb

    if name not in COLORMAPS + (DIVERGING,):
        raise ValueError(f"unknown colour map {name!r}; choose one of {', '.join(COLORMAPS)}")
    colours = sample_colorscale(get_colorscale(name), list(np.linspace(0, 1, 256)), colortype="rgb")
    lut = np.rint(np.array([unlabel_rgb(c) for c in colours], dtype=np.float64)).clip(0, 255).astype(np.uint8)
    lut.setflags(write=False)  # shared by every caller through the lru_cache
    return lut


def colorize(heat: np.ndarray, cmap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """float ``(H, W)`` in [0, 1] -> uint8 RGB ``(H, W, 3)``."""
    idx = (np.clip(np.nan_to_num(heat), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return colormap_lut(cmap)[idx]


def _resize_map(heat: np.ndarray, size: int) -> np.ndarray:
    img = Image.fromarray(np.asarray(heat, dtype=np.float32), mode="F")
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def map_range(heat: np.ndarray, signed: bool = False) -> tuple[float, float]:
    """The colour scale's ends for ``heat`` ``(H, W)``: ``(-m, m)`` with ``m = max|heat|`` for a
    signed map (zero in the middle), else ``(0, 1)``, the range of a relative map."""
    if not signed:
        return 0.0, 1.0
    peak = float(np.abs(np.nan_to_num(heat)).max(initial=0.0))
    return (-peak, peak) if peak > 0 else (-1.0, 1.0)


def overlay_image(image, heat: np.ndarray, alpha: float = 0.5, size: int = DETAIL_SIZE,
                  cmap: str = DEFAULT_COLORMAP, signed: bool = False) -> Image.Image:
    """uint8 ``image`` ``(C, H, W)`` + ``heat`` ``(H, W)`` -> RGB ``size`` x ``size`` PIL image.

    ``alpha`` is the heatmap's opacity: 0 shows the image alone, 1 the map alone. A ``signed`` map
    (drawn with :data:`DIVERGING`, ``cmap`` unused) has the opacity ``min(1, 2 alpha |a| / max|a|)``
    per pixel: 0 leaves the image as it is (a fixed opacity would veil it all in the scale's pale
    middle) and at the default 0.5 the largest ``|a|`` is fully opaque.
    Blending is Pillow's (C, in place of numpy temporaries: ~1 ms instead of ~5 at 256 px).
    """
    alpha = float(np.clip(alpha, 0.0, 1.0))
    base = upscale(to_hwc(image), size).convert("RGB")
    resized = _resize_map(heat, size)
    if not signed:
        return Image.blend(base, Image.fromarray(colorize(resized, cmap)), alpha)
    unit = np.nan_to_num(resized) / map_range(heat, True)[1]  # in [-1, 1]
    colour = Image.fromarray(colorize((unit + 1) / 2, DIVERGING))
    mask = Image.fromarray(np.rint(np.clip(np.abs(unit) * 2 * alpha, 0, 1) * 255).astype(np.uint8), mode="L")
    return Image.composite(colour, base, mask)


def overlay_array(image, heat: np.ndarray, alpha: float = 0.5, size: int = DETAIL_SIZE,
                  cmap: str = DEFAULT_COLORMAP, signed: bool = False) -> np.ndarray:
    """:func:`overlay_image` as uint8 ``(size, size, 3)``."""
    return np.asarray(overlay_image(image, heat, alpha, size, cmap, signed))


def overlay_png(image, heat: np.ndarray, alpha: float = 0.5, size: int = DETAIL_SIZE,
                cmap: str = DEFAULT_COLORMAP, signed: bool = False) -> bytes:
    return encode_png(overlay_image(image, heat, alpha, size, cmap, signed))


def image_png(image, size: int = DETAIL_SIZE) -> bytes:
    """The input image alone, upscaled like the overlays (for side-by-side views)."""
    return encode_png(upscale(to_hwc(image), size).convert("RGB"))


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
