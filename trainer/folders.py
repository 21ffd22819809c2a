"""Image folders read from disk lazily: listing, verification, fingerprint, per-image decoding.

``PATH/train/CLASS/*`` and ``PATH/test/CLASS/*`` (or ``PATH/val``) in torchvision's
ImageFolder layout. Nothing here holds a split as one array except
:func:`decode_files`, which the final evaluation and the dashboard use for the
(smaller) test split. Torch is not imported at module level: the dashboard
lists and decodes a test split before it loads torch.

Unreadable files are found when listing: ``PIL.Image.verify`` reads each
file's structure without decoding pixels (PNG chunks and CRCs, JPEG
headers), in a thread pool. A file that passes that yet fails to decode
(a truncated JPEG) is dropped where it is decoded; training never stops for it.
"""
from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from trainer.preprocess import pil_to_array
from trainer.sources import DatasetUnavailable

LAYOUT = "expected PATH/train/CLASS/*.png|jpg|... and PATH/test/CLASS/* (or PATH/val/CLASS/*)"


def default_workers() -> int:
    """The CPU cores this process may use (the affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class FileList:
    """Images of one split: ``paths`` relative to the dataset root, labels and byte sizes int64 ``(N,)``."""

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray
    sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, keep) -> "FileList":
        """The files at positions (or where the bool mask) ``keep``."""
        idx = np.arange(len(self))[keep]
        return FileList(self.root, tuple(self.paths[i] for i in idx), self.labels[idx], self.sizes[idx])

    def spread(self, n: int | None) -> "FileList":
        """``n`` files evenly spaced over the list (None: all). The list is sorted by class,
        so unlike its first ``n`` files this keeps every class's share."""
        if n is None or n >= len(self):
            return self
        return self.select(np.linspace(0, len(self) - 1, n).round().astype(np.int64))

    def fingerprint(self) -> str:
        """Hash of every (path, size, label) in order: proves the same files without decoding them."""
        h = hashlib.sha256()
        for p, s, y in zip(self.paths, self.sizes.tolist(), self.labels.tolist()):
            h.update(f"{p}\t{s}\t{y}\n".encode())
        return h.hexdigest()[:16]

    def records(self) -> list[dict]:
        rows = zip(self.paths, self.labels.tolist(), self.sizes.tolist())
        return [{"path": p, "label": y, "size": s} for p, y, s in rows]


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # PIL raises many types (UnidentifiedImageError, SyntaxError, OSError, ...)
        return False


def _class_folders(split_root: Path) -> tuple[list[str], list[str]]:
    """(class folders holding at least one image file, those holding none), sorted by name."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not split_root.is_dir():
        return [], []
    dirs = sorted((d for d in os.scandir(split_root) if d.is_dir()), key=lambda d: d.name)
    full = [any(f.name.lower().endswith(IMG_EXTENSIONS) for f in os.scandir(d)) for d in dirs]
    return [d.name for d, f in zip(dirs, full) if f], [d.name for d, f in zip(dirs, full) if not f]


def _list_split(root: Path, split: str, classes: tuple[str, ...], workers: int) -> tuple[FileList, list[str]]:
    """(readable files of ``root/split`` labelled by ``classes``, unreadable relative paths)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    to_idx = {c: i for i, c in enumerate(classes)}
    found = make_dataset(str(root / split), to_idx, IMG_EXTENSIONS, allow_empty=True)
    rel = [Path(p).relative_to(root).as_posix() for p, _ in found]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        ok = np.asarray(list(pool.map(lambda r: _readable(root / r), rel)), dtype=bool)
    sizes = np.asarray([(root / r).stat().st_size for r in rel], dtype=np.int64)
    files = FileList(root, tuple(rel), np.asarray([y for _, y in found], dtype=np.int64), sizes)
    return files.select(ok), [r for r, good in zip(rel, ok) if not good]


def open_folder(root: Path, workers: int | None = None,
                train: bool = True) -> tuple[tuple[str, ...], FileList | None, FileList]:
    """(classes, train files or None when ``train=False``, test files) of an image folder.

    Classes are the train/ sub-folders holding image files. Every listed file is
    checked cheaply; unreadable ones and empty class folders are skipped with one
    warning line on stderr. No images, a single class, or test classes unknown to
    training raise :class:`DatasetUnavailable`.
    """
    root = Path(root).expanduser()
    if not root.is_dir():  # a mistyped or moved PATH is named as such, not as a layout problem
        raise DatasetUnavailable(f"folder not found: {root}")
    test = next((s for s in ("test", "val") if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or test is None:
        raise DatasetUnavailable(f"{root}: no train/ and test/ sub-folders; {LAYOUT}")
    classes, empty = _class_folders(root / "train")
    if not classes:
        raise DatasetUnavailable(f"{root}/train holds no images; {LAYOUT}")
    if len(classes) < 2:
        raise DatasetUnavailable(
            f"{root}/train has one class ({classes[0]}); a classifier needs at least two class folders")
    test_classes, test_empty = _class_folders(root / test)
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise DatasetUnavailable(f"{root}/{test} has classes with no training images: {', '.join(unknown)}")
    workers = workers or default_workers()
    test_files, bad = _list_split(root, test, tuple(classes), workers)
    if not len(test_files):
        raise DatasetUnavailable(f"{root}/{test} holds no readable images; {LAYOUT}")
    train_files = None
    if train:
        train_files, bad_train = _list_split(root, "train", tuple(classes), workers)
        bad = bad_train + bad
    empty = [f"train/{c}" for c in empty] + [f"{test}/{c}" for c in test_empty]
    warn_skipped(root, bad, empty)
    return tuple(classes), train_files, test_files


def warn_skipped(root: Path, bad: list[str], empty: list[str] | tuple = ()) -> None:
    """One stderr line naming the count and the first few skipped files; nothing when none were."""
    parts = []
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        parts.append(f"skipped {len(bad)} unreadable image(s): {', '.join(bad[:3])}{more}")
    if empty:
        parts.append(f"ignored {len(empty)} class folder(s) without images: {', '.join(empty[:3])}")
    if parts:
        print(f"warning: {root}: {'; '.join(parts)}", file=sys.stderr, flush=True)


def decode(root: Path, relpath: str, size: int, in_channels: int = 3) -> np.ndarray | None:
    """One image as uint8 ``(C, size, size)``, or None when it cannot be decoded."""
    try:
        with Image.open(root / relpath) as img:
            return pil_to_array(img, size, in_channels)
    except Exception:  # a truncated or otherwise broken file: the caller drops it
        return None


def decode_files(files: FileList, size: int, workers: int | None = None,
                 in_channels: int = 3) -> tuple[np.ndarray, FileList]:
    """Decode a whole split in a thread pool (PIL releases the GIL while decoding and resizing).

    Returns images uint8 ``(N, C, size, size)`` and the files actually decoded
    (any that fail are dropped with one warning line), so the list matches the array.
    """
    with ThreadPoolExecutor(max(1, workers or default_workers())) as pool:
        arrays = list(pool.map(lambda p: decode(files.root, p, size, in_channels), files.paths))
    ok = np.asarray([a is not None for a in arrays], dtype=bool)
    warn_skipped(files.root, [p for p, good in zip(files.paths, ok) if not good])
    x = np.stack([a for a in arrays if a is not None]) if ok.any() else np.zeros((0, in_channels, size, size), np.uint8)
    return x, files.select(ok)


class FolderImages:
    """Map-style dataset for a ``torch.utils.data.DataLoader``: item ``i`` is
    (uint8 ``(C, size, size)`` or None, label, i, path), decoded in the worker process."""

    def __init__(self, files: FileList, size: int, in_channels: int = 3):
        self.files, self.size, self.in_channels = files, size, in_channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path = self.files.paths[i]
        return decode(self.files.root, path, self.size, self.in_channels), int(self.files.labels[i]), i, path


def collate(items: list) -> tuple:
    """Stack the decodable items: (uint8 ``(B, C, S, S)``, labels ``(B,)``, indices ``(B,)``, failed paths)."""
    import torch

    good = [it for it in items if it[0] is not None]
    failed = [it[3] for it in items if it[0] is None]
    if not good:
        return None, None, None, failed
    x = torch.from_numpy(np.stack([it[0] for it in good]))
    y = torch.tensor([it[1] for it in good], dtype=torch.int64)
    idx = torch.tensor([it[2] for it in good], dtype=torch.int64)
    return x, y, idx, failed
