"""Where training batches come from: images held on the device, or files decoded by DataLoader workers.

Both kinds of split give the one training loop (:mod:`trainer.train`) the same
thing. Called with a list of batches of positions into the split (int64
tensors), :meth:`batches` yields, per batch, normalised float images
``(B, C, H, W)`` and labels ``(B,)`` on the device, and the images' dataset
indices ``(B,)`` on the CPU (augmentation keys its per-image choices on them).

In-memory datasets (CIFAR-10, digits) stay uint8 on the device (a quarter of the
float32 memory) and each batch is normalised as it is drawn: no per-image work at all.
Image folders are decoded and resized in
``workers`` processes while the device trains, then normalised on the device.
"""
from __future__ import annotations

from typing import Iterator

import torch

from trainer.data import Dataset, FolderDataset, channel_stats
from trainer.folders import FolderImages, collate, default_workers, warn_skipped
from trainer.preprocess import normalize

STATS_SAMPLE = 2000  # folder images decoded for mean/std (and whitening): a full pass would cost an epoch

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class MemorySplit:
    """Training images ``ds.train_x[idx]`` kept uint8 on the device, normalised per batch
    (elementwise, so it commutes with the flips and shifts of :mod:`trainer.augment`)."""

    def __init__(self, ds: Dataset, idx: torch.Tensor, mean, std, device: torch.device, mf: torch.memory_format):
        self.x = ds.train_x[idx].to(device).contiguous(memory_format=mf)
        self.y = ds.train_y[idx].to(device)
        self.labels, self.idx, self.size = ds.train_y[idx], idx, ds.input_size
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.idx)

    def batches(self, positions: list[torch.Tensor]) -> Iterator[Batch]:
        for b in positions:
            b_dev = b.to(self.x.device)
            yield normalize(self.x[b_dev], self.mean, self.std), self.y[b_dev], self.idx[b]

    def whitening_sample(self, n: int) -> torch.Tensor:
        return normalize(self.x[:n], self.mean, self.std).contiguous()


class FileSplit:
    """Training files ``ds.train_files[idx]``, decoded per batch in DataLoader worker processes."""

    def __init__(self, ds: FolderDataset, idx: torch.Tensor, mean, std, device: torch.device,
                 mf: torch.memory_format, sample: torch.Tensor):
        self.images = FolderImages(ds.train_files, ds.size, ds.in_channels)
        self.labels, self.idx, self.size = ds.train_y[idx], idx, ds.size
        self.mean, self.std, self.device, self.mf = mean, std, device, mf
        self.workers = default_workers() if ds.workers is None else ds.workers
        self.sample = sample  # uint8 (n, C, S, S), decoded for the statistics already
        self.failed: set[str] = set()  # passed the listing check, failed to decode: warned about once

    def __len__(self) -> int:
        return len(self.idx)

    def batches(self, positions: list[torch.Tensor]) -> Iterator[Batch]:
        new: list[str] = []
        for x, y, idx, bad in load(self.images, [self.idx[b].tolist() for b in positions], self.workers, self.device):
            new += [p for p in bad if p not in self.failed]
            self.failed.update(bad)
            if x is not None:
                x = normalize(x.to(self.device, non_blocking=True), self.mean, self.std)
                yield x.contiguous(memory_format=self.mf), y.to(self.device, non_blocking=True), idx
        warn_skipped(self.images.files.root, new)  # e.g. a truncated JPEG: its header passed the listing check

    def whitening_sample(self, n: int) -> torch.Tensor:
        return normalize(self.sample[:n].to(self.device), self.mean, self.std).contiguous()


def load(images: FolderImages, batches: list[list[int]], workers: int, device: torch.device):
    """A DataLoader yielding ``collate``'d batches in the given order."""
    from torch.utils.data import DataLoader

    return DataLoader(images, batch_sampler=batches, num_workers=workers, collate_fn=collate,
                      pin_memory=device.type == "cuda")


def folder_sample(ds: FolderDataset, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Up to :data:`STATS_SAMPLE` evenly spaced training images uint8 ``(n, C, S, S)``."""
    pick = idx[torch.linspace(0, len(idx) - 1, min(STATS_SAMPLE, len(idx))).long()]
    images = FolderImages(ds.train_files, ds.size, ds.in_channels)
    workers = default_workers() if ds.workers is None else ds.workers
    parts = [x for x, *_ in load(images, [b.tolist() for b in pick.split(256)], workers, device) if x is not None]
    return torch.cat(parts)


def make_splits(ds: Dataset | FolderDataset, tr_idx: torch.Tensor, va_idx: torch.Tensor, device: torch.device,
                mf: torch.memory_format):
    """(train split, validation split or None, mean, std); statistics come from the training images."""
    if isinstance(ds, FolderDataset):
        sample = folder_sample(ds, tr_idx, device)
        mean, std = channel_stats(sample)

        def split(idx):
            return FileSplit(ds, idx, mean, std, device, mf, sample)
    else:
        mean, std = channel_stats(ds.train_x[tr_idx])

        def split(idx):
            return MemorySplit(ds, idx, mean, std, device, mf)
    return split(tr_idx), (split(va_idx) if len(va_idx) else None), mean, std
