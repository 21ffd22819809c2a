"""``RUN_DIR/embeddings.npz`` and ``RUN_DIR/embedding_map.npz``: the model's penultimate features of
every training and test image, and 2-D maps of the test set (:mod:`trainer.artifacts` files written by
``xai-dashboard precompute embeddings RUN``, :mod:`.embeddings`). Reading them, and the training
images they index, needs only numpy.

``embeddings.npz`` (``N`` training, ``M`` test images, ``D`` features)::

    train        float16 (N, D)  ``model.embed(x)`` of the training images, in the training set's order
    train_label  int64   (N,)    their labels
    test         float16 (M, D)  the same for the test images (the queries of "nearest training examples")
    config       str             JSON: {"features", "precision", "train_fingerprint", "metric"}

``embedding_map.npz``::

    pca, umap    float32 (M, 2)  the test embeddings projected to 2-D (PCA; UMAP with cosine distance)
    config       str             JSON: {"umap": {parameters}, "pca_explained_variance": [a, b]}

``embeddings.npz`` is bound to the weights, the test set, the architecture and preprocessing and the
training set (its source, size and subset from meta.json; the fingerprint of the images found is in
``config``); the map to the first three.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from trainer.artifacts import ArtifactError, declare, read
from trainer.sources import DatasetUnavailable, fingerprint, read_dataset

PRODUCER = "xai-dashboard precompute embeddings {run}"
EMBEDDINGS = declare("embeddings.npz", version=1, kind="npz",
                     binds=("weights", "test_set", "preprocessing", "train_set"), producer=PRODUCER)
EMBEDDING_MAP = declare("embedding_map.npz", version=1, kind="npz", binds=("weights", "test_set", "preprocessing"),
                        producer=PRODUCER)
METRIC = "cosine"  # distance = 1 - cosine similarity; the same ranking as L2 between unit-length embeddings


def _load(run_dir, meta: dict, artifact) -> tuple[dict | None, str]:
    try:
        data = read(run_dir, artifact, meta)
    except ArtifactError as e:
        return None, str(e)
    return {**data, "config": json.loads(str(data["config"]))}, ""


def load_embeddings(run_dir, meta: dict) -> tuple[dict | None, str]:
    """``(arrays with "config" parsed, "")`` for a current embeddings.npz; else ``(None, why)`` with the fix."""
    return _load(run_dir, meta, EMBEDDINGS)


def load_map(run_dir, meta: dict) -> tuple[dict | None, str]:
    """``(arrays with "config" parsed, "")`` for a current embedding_map.npz; else ``(None, why)``."""
    return _load(run_dir, meta, EMBEDDING_MAP)


@dataclass(frozen=True)
class TrainingSplit:
    """A run's training images: uint8 ``(N, C, H, W)`` (an array, or for an image folder a lazily
    decoding :class:`~.image_source.FolderTestImages` over the training files), labels int64 ``(N,)``,
    and their fingerprint (:func:`trainer.sources.fingerprint`, or the folder file list's)."""

    images: object
    labels: np.ndarray
    fingerprint: str
    originals: bool = False  # an image folder: thumbnails come from the user's files


def training_split(meta: dict, data_dir=None) -> TrainingSplit:
    """The ``num_train`` training images the run was trained on (validation ones included: they are
    training-set images too), as the trainer picked them: the first ``train_subset`` of CIFAR-10 or
    digits, or an image folder's ``train/`` files spread over the classes. Decodes nothing for a folder."""
    dataset = meta["dataset"]
    spec, n = dataset.get("spec", dataset["name"]), dataset["num_train"]
    if spec.startswith("imagefolder:"):
        from trainer import folders
        from trainer.sources import locate_folder

        from .image_source import FolderTestImages

        _, train, _ = folders.open_folder(locate_folder(spec, data_dir), train=True)
        files = train.spread(dataset.get("train_subset"))
        split = TrainingSplit(FolderTestImages(files, meta["input_size"], meta["in_channels"]), files.labels,
                              files.fingerprint(), originals=True)
    else:
        ds = read_dataset(spec, data_dir, meta["input_size"])
        x, y = ds.train_x[:n], ds.train_y[:n]
        split = TrainingSplit(x, np.asarray(y, dtype=np.int64), fingerprint(x, y))
    if len(split.labels) != n:
        raise DatasetUnavailable(f"found {len(split.labels):,} training images of {spec}; the run was trained on "
                                 f"{n:,}: different data — refusing to pair them")
    return split
