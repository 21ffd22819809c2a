"""What the dashboard asks of the embeddings (numpy only; torch only to embed an upload): the nearest
training examples of an image, the 2-D map of the test set and the training images to show.

**Nearest training examples.** Distance is the cosine distance ``1 - cos(a, b)`` between penultimate
features (:data:`.embeddings_file.METRIC`): the same ranking as the L2 distance between unit-length
embeddings, and blind to the features' overall scale. The search is exact: one float32 matrix-vector
product against the unit-length training embeddings, cached per process (``N x D x 4`` bytes: 51 MB
for CIFAR-10's 50,000 x 256), then ``argpartition``; ties are broken by the lower training index.

**Map.** PCA and UMAP coordinates come from ``embedding_map.npz``; before it exists the PCA is
computed from the test embeddings stored with the predictions (scikit-learn, once per process).

**Training images.** Served by ``/img/<run>/train/<i>.png`` only when the training images found have
the fingerprint the embeddings were computed on. CIFAR-10's are decompressed once into a private
``.npy`` in the user cache (``$XAI_CACHE_DIR/training``, 150 MB) and memory-mapped by every worker.
"""
from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.sources import DatasetUnavailable

from .embeddings_file import load_embeddings, load_map, training_split
from .images import ImageSet

K_DEFAULT, K_MAX = 8, 64
PROJECTIONS = {"pca": "PCA", "umap": "UMAP"}


def unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 ``(N, D)`` rows scaled to unit length (an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


@dataclass(frozen=True, eq=False)
class TrainIndex:
    """``unit`` float32 ``(N, D)`` unit-length training embeddings, ``labels`` int64 ``(N,)``, ``test``
    float16 ``(M, D)`` test embeddings (the queries for test images), ``fingerprint`` of the training set."""

    unit: np.ndarray
    labels: np.ndarray
    test: np.ndarray
    fingerprint: str


def nearest(unit: np.ndarray, query: np.ndarray, k: int = K_DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """``(indices int64 (k,), cosine distances float32 (k,))`` of the ``k`` rows of ``unit`` ``(N, D)``
    (unit length) closest to ``query`` ``(D,)``, nearest first; equal distances by lower index."""
    similarity = unit @ unit_rows(query[None])[0]
    k = min(int(k), len(similarity))
    top = np.argpartition(-similarity, k - 1)[:k] if k < len(similarity) else np.arange(len(similarity))
    top = top[np.lexsort((top, -similarity[top]))]
    return top.astype(np.int64), (1.0 - similarity[top]).astype(np.float32)


@functools.lru_cache(maxsize=2)
def _index(run, _stamp: tuple | None) -> tuple[TrainIndex | None, str]:
    """Keyed on the LoadedRun (one per process) and the file's (mtime, size): a rewritten file is re-read."""
    data, note = load_embeddings(run.run.path, run.meta)
    if data is None:
        return None, note
    return TrainIndex(unit_rows(data["train"]), data["train_label"], data["test"],
                      data["config"]["train_fingerprint"]), ""


def train_index(run) -> tuple[TrainIndex | None, str]:
    """LoadedRun ``run``'s :class:`TrainIndex`, or ``(None, why)`` (absent or stale, with the command)."""
    path = Path(run.run.path) / "embeddings.npz"
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = None
    return _index(run, stamp)


@dataclass(frozen=True)
class Neighbours:
    """The ``k`` nearest training images: ``index`` int64 ``(k,)``, ``label`` int64 ``(k,)``, ``distance``
    float32 ``(k,)`` (cosine), nearest first, and the training set's ``fingerprint`` (for their URLs)."""

    index: np.ndarray
    label: np.ndarray
    distance: np.ndarray
    fingerprint: str


def neighbours_of(run, *, test_index: int | None = None, image: np.ndarray | None = None,
                  k: int = K_DEFAULT) -> tuple[Neighbours | None, str]:
    """Nearest training images of test image ``test_index`` or of an uploaded uint8 ``image`` ``(C, H, W)``
    (embedded here, torch); ``(None, why)`` when the run has no current embeddings.npz."""
    index, note = train_index(run)
    if index is None:
        return None, note
    if test_index is not None:
        query = index.test[test_index].astype(np.float32)
    else:
        from .embeddings import embed_image

        query = embed_image(run, image)
    found, distance = nearest(index.unit, query, max(1, min(int(k), K_MAX)))
    return Neighbours(found, index.labels[found], distance, index.fingerprint), ""


# ------------------------------------------------------------------ the map

def pca_coords(test: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """``(float32 (M, 2), explained variance ratios)`` of embeddings ``(M, D)`` by scikit-learn's PCA."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=0)
    xy = pca.fit_transform(np.asarray(test, dtype=np.float32)).astype(np.float32)
    return xy, [float(v) for v in pca.explained_variance_ratio_]


@functools.lru_cache(maxsize=8)
def _stored_pca(run) -> np.ndarray:
    """PCA of the test embeddings stored with ``run``'s predictions (before embedding_map.npz exists)."""
    return pca_coords(run.run.predictions["embedding"])[0]


def map_coordinates(run, projection: str) -> tuple[np.ndarray | None, str]:
    """float32 ``(M, 2)`` coordinates of the test images under ``projection`` ("pca" or "umap"), or
    ``(None, why)``: UMAP exists only once ``precompute embeddings`` has run."""
    data, note = load_map(run.run.path, run.meta)
    if data is not None:
        return data[projection], ""
    if projection == "pca":
        return _stored_pca(run), ""
    return None, note


# ------------------------------------------------------------------ training images for thumbnails

def training_images(run, data_dir=None) -> ImageSet:
    """The training images ``run``'s embeddings index, as an :class:`~.images.ImageSet` keyed
    ``train-<fingerprint>``; DatasetUnavailable when absent or not those the embeddings were computed on."""
    index, note = train_index(run)
    if index is None:
        raise DatasetUnavailable(note)
    with _TRAINING_LOCK:  # the page asks for 8 thumbnails at once: the first one builds, the others wait
        return _training_images(run, index.fingerprint, data_dir)


_TRAINING_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _training_images(run, fingerprint: str, data_dir) -> ImageSet:
    from .cache import cache_dir

    key = f"train-{fingerprint}"
    path = cache_dir(cache_dir() / "training") / f"{fingerprint}.npy"
    if path.is_file():
        return ImageSet(key, np.load(path, mmap_mode="r"))
    split = training_split(run.meta, data_dir)
    if split.fingerprint != fingerprint:
        raise DatasetUnavailable(f"the training images found (fingerprint {split.fingerprint}) are not those the "
                                 f"embeddings were computed on ({fingerprint}); point --data-dir at the run's data")
    if split.originals:  # an image folder: decoded per request, thumbnails from the user's files
        return ImageSet(key, split.images)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npy")
    np.save(tmp, np.ascontiguousarray(split.images))
    os.replace(tmp, path)  # atomic: another worker reads a whole file or none
    return ImageSet(key, np.load(path, mmap_mode="r"))
