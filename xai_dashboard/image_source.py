"""An image folder's test split, decoded only when shown.

Holding a folder's test split as one array cost 22.5 s and 3.1 GB at start-up for 30,000
images of 128 px; a user's folder has tens of thousands of photos of 224 px or more. So a
folder run's ``LoadedRun.images`` is a :class:`FolderTestImages` built from the run's
recorded test file list (``test_files.json``; the folder is listed only for a run without
one). It answers what the views ask of the array it replaces (``len``, ``shape``,
``images[i]``, ``images[indices]``, ``images[a:b]``) by decoding those files with the
trainer's own preprocessing, and hands out the original photo for thumbnails and details
(:meth:`FolderTestImages.original`).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from trainer import folders
from trainer.folders import FileList
from trainer.rundir import Run, load_test_files
from trainer.sources import DatasetUnavailable, check_fingerprint, folder_test_files, locate_folder

DECODED_BYTES = 32 * 2**20  # decoded network inputs kept per run: the image the explain tab just showed, and more


class FolderTestImages:
    """uint8 ``(N, C, S, S)`` network inputs of ``files``, decoded on demand; nothing is decoded up front.

    ``S`` is the run's input size and ``C`` its channels. Indexing follows numpy: an int gives
    ``(C, S, S)``; a slice, an int array or a bool mask ``(M, C, S, S)``. Recently decoded
    inputs are kept in an LRU of at most :data:`DECODED_BYTES`. Thread-safe.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, files: FileList, size: int, in_channels: int = 3, keep_bytes: int = DECODED_BYTES):
        self.files, self.size, self.in_channels = files, size, in_channels
        self.shape = (len(files), in_channels, size, size)
        self._keep = max(1, keep_bytes // (in_channels * size * size))
        self._decoded: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"FolderTestImages({self.files.root}, {len(self):,} images, shape={self.shape})"

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._one(self._position(int(key))).copy()  # the caller's to change; the LRU keeps its own
        if isinstance(key, slice):
            idx = np.arange(*key.indices(len(self)))
        else:
            idx = np.asarray(key)
            if idx.dtype == bool:
                if idx.shape != (len(self),):
                    raise IndexError(f"a boolean mask of {idx.shape} for {len(self)} images")
                idx = np.flatnonzero(idx)
            elif idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
                raise IndexError(f"expected an int, a slice or a 1-d index array, got {idx.dtype} {idx.shape}")
        if not len(idx):
            return np.zeros((0, *self.shape[1:]), dtype=np.uint8)
        return np.stack([self._one(self._position(int(i))) for i in idx])

    def _position(self, i: int) -> int:
        """``i`` as numpy reads it (negatives count from the end), or IndexError."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of bounds for {n} images")
        return i % n

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        raise TypeError(f"{self!r} decodes on demand: index it (images[i], images[indices]) instead of "
                        f"converting all {len(self):,} images to one array")

    def path(self, index: int) -> Path:
        return self.files.root / self.files.paths[index]

    def _one(self, i: int) -> np.ndarray:
        with self._lock:
            hit = self._decoded.get(i)
            if hit is not None:
                self._decoded.move_to_end(i)
                return hit
        pixels = folders.decode(self.files.root, self.files.paths[i], self.size, self.in_channels)
        if pixels is None:
            raise DatasetUnavailable(f"test image {i} ({self.path(i)}) can no longer be decoded")
        with self._lock:
            self._decoded[i] = pixels
            while len(self._decoded) > self._keep:
                self._decoded.popitem(last=False)
        return pixels

    def original(self, index: int, fit: int | None = None) -> Image.Image:
        """Test image ``index`` as the user's file shows it: decoded, EXIF orientation applied.

        ``fit``: the caller will shrink it to fit ``fit`` x ``fit``, so a JPEG may decode at a
        smaller DCT scale (``draft``: 1/2 to 1/8, never below ``fit``), which is most of the speed.
        Raises :class:`~trainer.sources.DatasetUnavailable` when the file cannot be read.
        """
        try:
            with Image.open(self.path(index)) as img:
                if fit:
                    img.draft(img.mode, (fit, fit))
                return ImageOps.exif_transpose(img)  # a loaded copy, rotated as the camera meant
        except Exception as e:  # PIL raises many types for a file that changed since the run
            raise DatasetUnavailable(f"test image {index} ({self.path(index)}) can no longer be read "
                                     f"({type(e).__name__}: {e})") from None


def open_folder_split(run: Run, data_dir: str | None = None) -> tuple[FolderTestImages, np.ndarray]:
    """``(images, labels int64 (N,))`` of an image-folder run, decoding nothing.

    From the run's ``test_files.json`` (only stats a few files: :func:`trainer.sources.folder_test_files`);
    a run without one lists the folder as the trainer did (verifying each file's header).
    ``data_dir`` (or ``$XAI_DATA_DIR``) says where the folder is if it moved.
    """
    meta = run.meta
    records = load_test_files(run.path)
    if records is not None:
        files = folder_test_files(meta["dataset"], records, data_dir)
    else:
        files = _listed(meta["dataset"], data_dir)
    return FolderTestImages(files, meta["input_size"], meta["in_channels"]), files.labels


def _listed(dataset: dict, data_dir: str | None) -> FileList:
    """The test files as the trainer picked them (``test_subset`` spread over the classes), fingerprint checked."""
    root = locate_folder(dataset["spec"], data_dir)
    _, _, test = folders.open_folder(root, train=False)
    files = test.spread(dataset.get("test_subset"))
    check_fingerprint(dataset, files.fingerprint())
    return files
