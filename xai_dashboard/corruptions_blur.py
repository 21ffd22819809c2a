"""The blurs, the elastic transform and fog of :mod:`.corruptions` (registered there).

Each function takes uint8 images ``(N, H, W, 3)``, a severity 1-5 and one numpy Generator per image
(empty for the deterministic ones) and returns float32 ``(N, H, W, 3)`` (clipped and stored as uint8
by :func:`.corruptions.corrupt`). Parameters are those of the reference's ``make_cifar_c.py`` for 32x32
images; ``_scale`` is how they grow with the image side (see :mod:`.corruptions`). Whole batches are
processed at once: small convolutions and bilinear resampling in torch, Gaussian filters and the
zoom blur's sparse linear map in scipy, the motion blur as slices of an edge-padded batch, one small
numpy draw per image.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, sparse


def _unit(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255


def _scale(x: np.ndarray) -> float:
    """Image side relative to CIFAR's 32 pixels (the shorter side)."""
    return min(x.shape[1:3]) / 32


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def gaussian_blur(x, severity, rngs):
    """scikit-image's ``gaussian(sigma, channel_axis=-1)``: edge pixels repeated, truncated at 4 sigma."""
    sigma = [.4, .6, 0.7, .8, 1][severity - 1] * _scale(x)
    return ndimage.gaussian_filter(_unit(x), sigma=(0, sigma, sigma, 0), mode="nearest", truncate=4.0)


def gaussian_taps(size: int, sigma: float) -> np.ndarray:
    """OpenCV's ``getGaussianKernel(size, sigma)`` for sigma > 0: sampled, normalised to sum 1."""
    i = np.arange(size) - (size - 1) / 2
    g = np.exp(-i ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's defocus kernel float64 ``(K, K)``: the pixels within ``radius`` of the centre,
    normalised, anti-aliased by a 3-tap (5-tap beyond radius 8) Gaussian of sigma ``alias_blur``; the
    reference's 17x17 frame is cropped to where the kernel is non-zero."""
    half = int(np.ceil(radius)) + 2  # room for the disk and the blur's spread: no border is reached
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    taps = gaussian_taps(3 if radius <= 8 else 5, alias_blur)
    kernel = ndimage.correlate1d(ndimage.correlate1d(disk, taps, 0, mode="constant"), taps, 1, mode="constant")
    rows, cols = np.flatnonzero(kernel.any(1)), np.flatnonzero(kernel.any(0))
    return kernel[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def defocus_blur(x, severity, rngs):
    """Each channel filtered with :func:`disk_kernel`, borders mirrored without repeating the edge
    (OpenCV's default ``filter2D`` border, torch's "reflect")."""
    radius, alias = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    kernel = torch.from_numpy(disk_kernel(radius * _scale(x), alias * _scale(x))).float()
    n, h, w, c = x.shape
    t = _nchw(_unit(x)).reshape(n * c, 1, h, w)
    k = kernel.shape[0] // 2
    out = F.conv2d(F.pad(t, (k, k, k, k), mode="reflect"), kernel[None, None])
    return _nhwc(out.reshape(n, c, h, w))


def motion_blur(x, severity, rngs):
    """ImageMagick's ``-motion-blur radius x sigma + angle`` (what the reference calls through Wand),
    without ImageMagick: each pixel becomes the mean of the pixels at offsets ``round(i * (cos, sin)(angle))``,
    ``i = 0 .. 2 * radius``, weighted by ``exp(-i^2 / 2 sigma^2)``, the image's edge pixels repeated
    beyond it; one angle per image, uniform in [-45, 45] degrees."""
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
    radius, sigma = max(1, round(radius * _scale(x))), sigma * _scale(x)
    steps = np.arange(2 * radius + 1)
    weights = np.exp(-steps ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    angle = np.deg2rad(np.array([r.uniform(-45, 45) for r in rngs]))
    # ceil(v - 0.5): ImageMagick's rounding of the offsets
    dx = np.ceil(np.cos(angle)[:, None] * steps - 0.5).astype(np.int64)  # (N, 2 * radius + 1)
    dy = np.ceil(np.sin(angle)[:, None] * steps - 0.5).astype(np.int64)
    # Sorted by angle, the images sharing an offset at each step are runs: each run is a slice of the
    # edge-padded batch (no gathering), a few dozen slices per step.
    order = np.argsort(angle, kind="stable")
    out = np.empty(x.shape, np.float32)
    for lo in range(0, len(x), _CHUNK):  # bounded memory: the padded copy is several times the images
        part = order[lo:lo + _CHUNK]
        out[part] = _shifted_sum(_unit(x[part]), dx[part], dy[part], weights, 2 * radius)
    return out


_CHUNK = 1024


def _shifted_sum(x: np.ndarray, dx: np.ndarray, dy: np.ndarray, weights: np.ndarray, pad: int) -> np.ndarray:
    """``sum_i weights[i] * x shifted by (dx[:, i], dy[:, i])``, edges repeated; ``x`` ``(N, H, W, C)``,
    offsets ``(N, steps)`` of at most ``pad`` pixels, equal offsets in runs of consecutive images."""
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    out = np.zeros_like(x)
    for i, weight in enumerate(weights):
        change = np.flatnonzero((np.diff(dx[:, i]) != 0) | (np.diff(dy[:, i]) != 0)) + 1
        for lo, hi in zip([0, *change], [*change, n]):
            top, left = pad + dy[lo, i], pad + dx[lo, i]
            out[lo:hi] += np.float32(weight) * padded[lo:hi, top:top + h, left:left + w]
    return out


def zoom_matrix(size: int, zoom: float) -> sparse.csr_matrix:
    """``(size, size)``: the reference's ``clipped_zoom`` along one axis as a linear map.

    The centre ``ceil(size / zoom)`` pixels are resized to ``round(that * zoom)`` by linear
    interpolation (``scipy.ndimage.zoom(order=1)``: output ``j`` reads input ``j * (n_in - 1) /
    (n_out - 1)``) and the centre ``size`` pixels kept."""
    n_in = int(np.ceil(size / zoom))
    n_out = int(round(n_in * zoom))
    trim, top = (n_out - size) // 2, (size - n_in) // 2
    pos = np.arange(trim, trim + size) * (n_in - 1) / (n_out - 1)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, n_in - 2)
    frac = pos - lo
    rows = np.repeat(np.arange(size), 2)
    cols = top + np.stack([lo, lo + 1], 1).ravel()
    return sparse.csr_matrix((np.stack([1 - frac, frac], 1).ravel(), (rows, cols)), shape=(size, size))


def zoom_blur(x, severity, rngs):
    """The mean of the image and its centre zoomed by each factor (1.00, 1.01, ... up to the severity's).

    The whole blur is one sparse linear map of an image channel's ``H * W`` pixels, the mean of
    ``kron(rows_z, cols_z)`` (``X -> rows_z @ X @ cols_z.T``) and the identity, applied to every channel at once.
    """
    factors = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
               np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)][severity - 1]
    n, h, w, c = x.shape
    blur = sparse.identity(h * w, format="csr")
    for z in factors:
        blur = blur + sparse.kron(zoom_matrix(h, float(z)), zoom_matrix(w, float(z)), format="csr")
    pixels = _unit(x).transpose(1, 2, 0, 3).reshape(h * w, n * c)
    out = (blur.astype(np.float32) @ pixels) / (len(factors) + 1)
    return np.ascontiguousarray(out.reshape(h, w, n, c).transpose(2, 0, 1, 3))


def plasma_fractal(rngs, mapsize: int, decay: float) -> np.ndarray:
    """float64 ``(N, mapsize, mapsize)`` in [0, 1]: the reference's diamond-square height map (``mapsize``
    a power of two, wrapping around), one per generator, drawn for the whole batch level by level.
    Each image draws its uniforms at once, in the reference's order (squares, then two diamond grids per level)."""
    sizes, step = [], mapsize
    while step >= 2:
        sizes += [(mapsize // step) ** 2] * 3
        step //= 2
    pool = np.stack([r.uniform(-1, 1, sum(sizes)) for r in rngs])
    maps = np.zeros((len(rngs), mapsize, mapsize))
    step, wibble, used = mapsize, 100.0, 0

    def wibbled_mean(total: np.ndarray) -> np.ndarray:
        nonlocal used
        count = total.shape[1] * total.shape[2]
        noise = pool[:, used:used + count].reshape(total.shape)
        used += count
        return total / 4 + wibble * wibble * noise  # the reference's wibble * uniform(-wibble, wibble)

    while step >= 2:
        half = step // 2
        corners = maps[:, ::step, ::step]
        total = corners + np.roll(corners, -1, axis=1)
        maps[:, half::step, half::step] = wibbled_mean(total + np.roll(total, -1, axis=2))
        centres, corners = maps[:, half::step, half::step], maps[:, ::step, ::step]
        maps[:, ::step, half::step] = wibbled_mean(centres + np.roll(centres, 1, axis=1)
                                                   + corners + np.roll(corners, -1, axis=2))
        maps[:, half::step, ::step] = wibbled_mean(centres + np.roll(centres, 1, axis=2)
                                                   + corners + np.roll(corners, -1, axis=1))
        step //= 2
        wibble /= decay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def fog(x, severity, rngs):
    """A plasma-fractal haze of strength ``c`` added, then the image rescaled by ``max / (max + c)``."""
    strength, decay = [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    h, w = x.shape[1:3]
    mapsize = 1 << int(np.ceil(np.log2(max(h, w))))
    haze = plasma_fractal(rngs, mapsize, decay)[:, :h, :w, None].astype(np.float32)
    x = _unit(x)
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + strength * haze) * peak / (peak + strength)


def _affine_sources(n_h_w: tuple[int, int, int], offsets: np.ndarray) -> torch.Tensor:
    """Sampling grid ``(N, H, W, 2)`` (grid_sample's x, y in [-1, 1], corners aligned) of the affine
    warps that move the reference's three points (the centre +- a third of the side) by ``offsets``
    ``(N, 3, 2)`` pixels: each output pixel reads the inverse-warped input position."""
    n, h, w = n_h_w
    cx, cy, sq = w // 2, h // 2, min(h, w) // 3
    pts = np.array([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]], dtype=np.float64)
    ones = np.c_[pts, np.ones(3)]
    forward = np.einsum("ij,njk->nki", np.linalg.inv(ones), pts[None] + offsets)  # (N, 2, 3): pts -> pts + offsets
    inverse = np.linalg.inv(np.concatenate([forward, np.tile([[[0, 0, 1]]], (n, 1, 1))], 1))[:, :2]
    yy, xx = np.mgrid[0:h, 0:w]
    src = np.einsum("nij,jhw->nhwi", inverse, np.stack([xx, yy, np.ones_like(xx)]).astype(np.float64))
    return torch.from_numpy(src / [max(w - 1, 1), max(h - 1, 1)] * 2 - 1).float()


def elastic_transform(x, severity, rngs):
    """A random affine warp (borders mirrored without repeating the edge), then every pixel displaced by
    Gaussian-smoothed uniform noise (``alpha``, ``sigma``; borders mirrored with the edge repeated)."""
    n, h, w, _ = x.shape
    side = min(h, w)
    alpha, sigma, jitter = (side * f for f in [(0, 0, .08), (.05, .2, .07), (.08, .06, .06), (.1, .04, .05),
                                               (.1, .03, .03)][severity - 1])
    draws = [(r.uniform(-jitter, jitter, (3, 2)), r.uniform(-1, 1, (2, h, w))) for r in rngs]
    offsets, noise = np.stack([d[0] for d in draws]), np.stack([d[1] for d in draws])
    warped = F.grid_sample(_nchw(_unit(x)), _affine_sources((n, h, w), offsets), mode="bilinear",
                           padding_mode="reflection", align_corners=True)
    shift = ndimage.gaussian_filter(noise, sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3) * alpha
    yy, xx = np.mgrid[0:h, 0:w]
    # pixel centres -> grid_sample's [-1, 1] without aligned corners: its reflection is scipy's "reflect"
    gx = (2 * (xx + shift[:, 0]) + 1) / w - 1
    gy = (2 * (yy + shift[:, 1]) + 1) / h - 1
    grid = torch.from_numpy(np.stack([gx, gy], -1)).float()
    return _nhwc(F.grid_sample(warped, grid, mode="bilinear", padding_mode="reflection", align_corners=False))
