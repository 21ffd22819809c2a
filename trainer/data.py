"""The training data as tensors: datasets, splits and normalisation statistics.

:mod:`trainer.sources` reads CIFAR-10 and digits into numpy; here they become
contiguous uint8 tensors ``(N, C, H, W)`` held in memory, so augmentation runs
on whole batches on the training device instead of per-image PIL transforms.
Image folders (:class:`FolderDataset`) stay on disk: only their file lists are
held, and images are decoded in DataLoader workers (:mod:`trainer.batches`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

import torch

from trainer.folders import FileList, decode_files, open_folder
from trainer.sources import fingerprint, folder_root, image_side, read_dataset


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

    def subset(self, train: int | None, test: int | None) -> "Dataset":
        """The first ``train`` training and ``test`` test images (None: all)."""
        return Dataset(self.name, self.train_x[:train], self.train_y[:train], self.test_x[:test],
                       self.test_y[:test], self.classes)


@dataclass(frozen=True)
class FolderDataset:
    """An image folder left on disk: file lists only; every image is decoded to uint8
    ``(3, size, size)`` when used. The test split is decoded once, on first use (final
    evaluation), and its fingerprint is that of the decoded file list."""

    name: str
    train_files: FileList
    listed_test: FileList
    classes: tuple[str, ...]
    size: int
    workers: int | None = None
    in_channels: int = 3

    @classmethod
    def open(cls, spec: str, size: int | None, workers: int | None) -> "FolderDataset":
        root = folder_root(spec)
        classes, train, test = open_folder(root, workers)
        return cls(f"imagefolder:{root.name}", train, test, classes, image_side(size), workers)

    @property
    def input_size(self) -> int:
        return self.size

    @property
    def train_y(self) -> torch.Tensor:
        return torch.from_numpy(self.train_files.labels)

    @cached_property
    def _test(self) -> tuple[torch.Tensor, FileList]:
        x, files = decode_files(self.listed_test, self.size, self.workers, self.in_channels)
        return torch.from_numpy(x), files

    @property
    def test_x(self) -> torch.Tensor:
        return self._test[0]

    @property
    def test_files(self) -> FileList:
        """The test files actually decoded (unreadable ones dropped), in ``test_x`` order."""
        return self._test[1]

    @property
    def test_y(self) -> torch.Tensor:
        return torch.from_numpy(self.test_files.labels)

    @property
    def fingerprint(self) -> str:
        return self.test_files.fingerprint()

    def describe(self) -> dict:
        return {"name": self.name, "fingerprint": self.fingerprint,
                "num_train": len(self.train_files), "num_test": len(self.test_files)}

    def subset(self, train: int | None, test: int | None) -> "FolderDataset":
        return FolderDataset(self.name, self.train_files.spread(train), self.listed_test.spread(test), self.classes,
                             self.size, self.workers, self.in_channels)


def load_dataset(spec: str, data_dir: str | os.PathLike | None = None, input_size: int | None = None,
                 train: bool = True, workers: int | None = None) -> Dataset | FolderDataset:
    """:func:`trainer.sources.read_dataset` as contiguous tensors; ``train=False`` skips the training images.

    ``imagefolder:PATH`` gives a :class:`FolderDataset` (nothing decoded yet; ``workers``
    threads check the files).
    """
    if spec.startswith("imagefolder:"):
        return FolderDataset.open(spec, input_size, workers)
    a = read_dataset(spec, data_dir, input_size, train)

    def t(x):
        return torch.from_numpy(x).contiguous()  # sources may hand out strided views

    return Dataset(a.name, t(a.train_x), t(a.train_y), t(a.test_x), t(a.test_y), a.classes)


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the [0, 1] scale of uint8 images ``(N, C, H, W)``."""
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    ss = torch.zeros(c, dtype=torch.float64)
    # Chunks of 4096 images of 32 px (fewer when larger), so no more than ~100 MB is ever float64 at once.
    for chunk in x.split(max(1, 4096 * 32 * 32 // (x.shape[2] * x.shape[3]))):
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
