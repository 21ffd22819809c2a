"""Annotator distributions: how a crowd of people labelled each test image (e.g. CIFAR-10H).

An annotator file is an ``.npz`` with ``probs`` float ``(N, K)`` (each row: the share of
people who chose each class; non-negative, summing to 1) and ``y`` int ``(N,)`` (the test
labels it was made for); ``counts`` ``(N, K)`` (votes per class) may come along. It is
found, for a run, at the first of:

1. ``--human-labels FILE`` on ``xai-dashboard``, or ``$XAI_HUMAN_LABELS``;
2. beside the dataset's files: :data:`BESIDE_DATA` (``cifar10h_test_probs.npz`` in the
   CIFAR-10 data folder, ``--data-dir`` / ``$XAI_DATA_DIR``).

It is used only when it fits the run's test set: N rows, K columns and ``y`` equal to the
run's labels, in order. Otherwise it is refused and :func:`annotations` says why, for the page.
Loading is lazy (first use) and memoised on the file's identity and the run's labels.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from trainer.sources import data_dir_from

HUMAN_LABELS_ENV = "XAI_HUMAN_LABELS"
BESIDE_DATA = {"cifar10": "cifar10h_test_probs.npz"}  # dataset spec -> annotator file in its data folder
ROW_SUM_TOLERANCE = 1e-3


class AnnotatorFileError(ValueError):
    """The annotator file does not fit the run's test set; the message says why."""


@dataclass(frozen=True, eq=False)  # hashed by identity: a memoised result stands for its file
class Annotations:
    """What :func:`annotations` found for a run: ``probs`` float64 ``(N, K)`` when a file fits, else None
    with ``problem`` (refused) or nothing (no file). ``source`` is the file looked at."""

    source: Path | None
    probs: np.ndarray | None = None
    problem: str | None = None


def candidate(run, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The annotator file to try for ``run``: the configured one, else one beside the data, else None."""
    configured = os.environ.get(HUMAN_LABELS_ENV)
    if configured:
        return Path(configured).expanduser()
    name = BESIDE_DATA.get(run.meta["dataset"].get("spec", ""))
    folder = data_dir_from(data_dir)
    if name and folder is not None and (folder / name).is_file():
        return folder / name
    return None


def check(probs: np.ndarray, y: np.ndarray | None, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``probs`` as float64 ``(N, K)`` if it fits a test set with ``labels`` ``(N,)`` and ``num_classes``;
    else :class:`AnnotatorFileError` naming the first thing wrong."""
    n = len(labels)
    if probs.ndim != 2 or probs.shape != (n, num_classes):
        raise AnnotatorFileError(f"'probs' has shape {probs.shape}; the test set needs ({n}, {num_classes}) "
                                 f"(one row per test image, one column per class)")
    if not np.issubdtype(probs.dtype, np.number) or np.issubdtype(probs.dtype, np.complexfloating):
        raise AnnotatorFileError(f"'probs' holds {probs.dtype}, not numbers")
    probs = probs.astype(np.float64)
    for bad, what in ((~np.isfinite(probs), "non-finite"), (probs < 0, "negative")):
        rows = np.flatnonzero(bad.any(1))
        if len(rows):
            raise AnnotatorFileError(f"'probs' has {what} values in {len(rows)} rows (first: row {int(rows[0])})")
    off = np.abs(probs.sum(1) - 1.0) > ROW_SUM_TOLERANCE
    if off.any():
        r = int(np.flatnonzero(off)[0])
        raise AnnotatorFileError(f"{int(off.sum())} rows of 'probs' do not sum to 1 (row {r} sums to "
                                 f"{probs[r].sum():.4f}; tolerance {ROW_SUM_TOLERANCE})")
    if y is None:
        raise AnnotatorFileError("no 'y' (the test labels the distributions were made for), so the rows "
                                 "cannot be matched to the test images")
    if y.shape != (n,) or not np.array_equal(y.astype(np.int64, copy=False), labels):
        differ = n if y.shape != (n,) else int(np.count_nonzero(y != labels))
        raise AnnotatorFileError(f"its 'y' does not equal the test labels ({differ} of {n} differ): it was "
                                 f"made for other images or another order")
    return probs


def read(path: Path, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The checked ``probs`` of the file at ``path`` (:func:`check`); unreadable files raise the error too."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if "probs" not in f.files:
                raise AnnotatorFileError(f"no 'probs' array (it has {', '.join(f.files) or 'nothing'})")
            probs, y = f["probs"], (f["y"] if "y" in f.files else None)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, AnnotatorFileError):
            raise
        raise AnnotatorFileError(f"cannot be read as an .npz file ({type(e).__name__}: {e})") from None
    return check(probs, y, labels, num_classes)


@lru_cache(maxsize=8)
def _annotations(path: str, _stamp: tuple, labels: bytes, num_classes: int) -> Annotations:
    """Memoised on the file's (inode, size, mtime) and the run's labels (int64 bytes)."""
    try:
        probs = read(Path(path), np.frombuffer(labels, dtype=np.int64), num_classes)
    except AnnotatorFileError as e:
        return Annotations(Path(path), problem=f"annotator file {path} refused: {e}")
    probs.setflags(write=False)  # shared by every caller of the cache
    return Annotations(Path(path), probs)


def annotations(run, data_dir: str | os.PathLike | None = None) -> Annotations:
    """The annotator distributions for ``run`` (see the module notes), checked against its test set."""
    path = candidate(run, data_dir)
    if path is None:
        return Annotations(None)
    try:
        st = path.stat()
    except OSError as e:
        return Annotations(path, problem=f"annotator file {path} cannot be read ({e.strerror or e})")
    labels = np.ascontiguousarray(run.labels, dtype=np.int64).tobytes()
    return _annotations(str(path), (st.st_ino, st.st_size, st.st_mtime_ns), labels, len(run.class_names))


def human_probs(run, data_dir: str | os.PathLike | None = None) -> np.ndarray | None:
    """People's label distribution per test image, float64 ``(N, K)`` (read-only); None without a fitting file."""
    return annotations(run, data_dir).probs


def entropy_bits(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits of each row of ``probs`` ``(N, K)``: 0 = unanimous, log2 K = uniform."""
    from scipy.stats import entropy

    return entropy(probs, base=2, axis=1)


def human_entropy(run, data_dir: str | os.PathLike | None = None) -> np.ndarray | None:
    """Entropy (bits) of people's labels per test image, float64 ``(N,)``; None without a fitting file."""
    probs = human_probs(run, data_dir)
    return None if probs is None else entropy_bits(probs)
