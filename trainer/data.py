"""The training data as tensors: datasets, splits and normalisation statistics.

:mod:`trainer.sources` reads the files into numpy; here they become contiguous
uint8 tensors ``(N, C, H, W)`` held in memory, so augmentation runs on whole
batches on the training device instead of per-image PIL transforms.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from trainer.sources import fingerprint, read_dataset


@dataclass(frozen=True)
class Dataset:
    """Images are uint8 ``(N, C, H, W)``; labels int64 ``(N,)``."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def input_size(self) -> int:
        return self.train_x.shape[-1]

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.test_x, self.test_y)

    def describe(self) -> dict:
        """The dataset block of ``meta.json``."""
        return {
            "name": self.name, "fingerprint": self.fingerprint,
            "num_train": len(self.train_y), "num_test": len(self.test_y),
        }


def load_dataset(spec: str, data_dir: str | os.PathLike | None = None, input_size: int | None = None,
                 train: bool = True) -> Dataset:
    """:func:`trainer.sources.read_dataset` as contiguous tensors; ``train=False`` skips the training images."""
    a = read_dataset(spec, data_dir, input_size, train)

    def t(x):
        return torch.from_numpy(x).contiguous()  # sources may hand out strided views

    return Dataset(a.name, t(a.train_x), t(a.train_y), t(a.test_x), t(a.test_y), a.classes)


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the [0, 1] scale of uint8 images ``(N, C, H, W)``."""
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    ss = torch.zeros(c, dtype=torch.float64)
    for chunk in x.split(4096):  # chunked so 50k images never become one float64 copy
        f = chunk.to(torch.float64) / 255
        s += f.sum(dim=(0, 2, 3))
        ss += (f * f).sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    std = (ss / n - mean**2).sqrt()
    return mean.tolist(), std.tolist()


def train_val_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic (train indices, validation indices) over ``n`` training images."""
    if not 0 <= val_fraction < 1:
        raise ValueError("val_fraction must be in [0, 1)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_fraction))
    return perm[n_val:].sort().values, perm[:n_val].sort().values
