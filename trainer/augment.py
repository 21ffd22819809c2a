"""Batch-level augmentation as tensor operations on the training device.

Per-image PIL transforms in DataLoader workers starve a 2-core CPU; these
functions transform a whole float batch ``(N, C, H, W)`` at once. Every
random choice comes from an explicit ``torch.Generator`` so a run is
reproducible and resumable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    translate: int = 4          # random crop after padding by this many pixels (0: off)
    pad_mode: str = "reflect"   # "reflect" or "zeros"
    flip: str = "random"        # "random", "alternate" (derandomised per epoch) or "none"
    cutout: int = 0             # side of a zeroed square (0: off)
    jitter: float = 0.0         # brightness/contrast jitter strength (0: off)
    rotate: float = 0.0         # max rotation in degrees (0: off)


def translate_and_mirror(x: torch.Tensor, pad: int, mirror: torch.Tensor, gen: torch.Generator,
                         mode: str = "reflect") -> torch.Tensor:
    """Mirror the images where ``mirror`` (bool ``(N,)``), pad each side by ``pad`` and crop back at
    a random offset per image; ``x`` ``(N, C, H, W)`` -> the same shape, stored channels-last.

    One gather from the padded batch does all three: padding is symmetric, so mirroring the
    padded image equals padding the mirrored one, and a mirrored crop just reads the columns
    backwards. Gathering whole pixels (all channels at once) writes the channels-last layout the
    convolutions want, so no further copy is made.
    """
    n, _, h, w = x.shape
    padded = F.pad(x, (pad,) * 4, mode="reflect" if mode == "reflect" else "constant") if pad else x
    # No draws without a shift, so the random stream of later augmentations is unchanged.
    dx, dy = (torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device) if pad
              else torch.zeros(n, dtype=torch.long, device=x.device) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (N, W)
    cols = torch.where(mirror[:, None], w + 2 * pad - 1 - cols, cols)[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (N, H, W, C) viewed as NCHW


def flip_mask(indices: torch.Tensor, epoch: int, mode: str, gen: torch.Generator, seed: int) -> torch.Tensor:
    """Bool ``(N,)``: which images of the batch to mirror.

    ``alternate`` gives each training image a fixed random bit and flips it on
    every other epoch, so over two epochs each image is seen both ways
    (fewer repeats than independent coin flips).
    """
    if mode == "none":
        return torch.zeros(len(indices), dtype=torch.bool)
    if mode == "random":
        return torch.rand(len(indices), generator=gen) < 0.5
    # A per-image bit that depends only on (seed, index), not on the batch order.
    bits = ((indices.long() * 2654435761 + seed * 40503) >> 7) & 1
    return (bits ^ (epoch % 2)).bool()


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=gen).to(x.device)[:, None, None]
    cx = torch.randint(0, w, (n,), generator=gen).to(x.device)[:, None, None]
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    return x.masked_fill(inside[:, None], 0.0)


def color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Random brightness shift and contrast scale per image, on normalised inputs."""
    n = x.shape[0]
    shift = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1).to(x) * strength
    scale = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1).to(x) * strength
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * scale + mean + shift


def rotate(x: torch.Tensor, max_degrees: float, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    theta = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(max_degrees)
    cos, sin = theta.cos(), theta.sin()
    affine = torch.stack([torch.stack([cos, -sin, torch.zeros(n)], 1), torch.stack([sin, cos, torch.zeros(n)], 1)], 1)
    grid = F.affine_grid(affine.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)


def augment_batch(x: torch.Tensor, indices: torch.Tensor, epoch: int, cfg: AugmentConfig,
                  gen: torch.Generator, seed: int) -> torch.Tensor:
    """Augment a normalised float batch ``(N, C, H, W)``; ``indices`` are the images' dataset indices."""
    mirror = flip_mask(indices, epoch, cfg.flip, gen, seed).to(x.device)
    if cfg.translate or mirror.any():
        x = translate_and_mirror(x, cfg.translate, mirror, gen, cfg.pad_mode)
    if cfg.rotate:
        x = rotate(x, cfg.rotate, gen)
    if cfg.jitter:
        x = color_jitter(x, cfg.jitter, gen)
    if cfg.cutout:
        x = cutout(x, cfg.cutout, gen)
    return x
