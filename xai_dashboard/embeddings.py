"""The embeddings job: the model's penultimate features of every training and test image, and the 2-D
maps of the test set, written as ``RUN_DIR/embeddings.npz`` and ``RUN_DIR/embedding_map.npz``
(layout: :mod:`.embeddings_file`).

Features are ``model.embed(x)``: every zoo model implements it (the registry's contract is
``forward(x) = head(embed(x))``, :class:`trainer.models.registry.ZooModel`), so what is stored is
exactly the input of the classification head, for any architecture, with no hook. They are computed
in float32 like the stored predictions (whose ``embedding`` column is the same features), so a query
embedded later (an upload, :func:`embed_image`) is comparable with them; they are stored as float16.

UMAP (umap-learn, cosine distance, fixed seed) runs here, never inside a request; the PCA is stored
too, so the map opens without computing anything.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from trainer.artifacts import write
from trainer.rundir import load_run
from trainer.runtime import pick_device
from trainer.sources import load_test_split

from .embedding_space import pca_coords
from .embeddings_file import EMBEDDING_MAP, EMBEDDINGS, METRIC, training_split
from .explain import inference_model, to_input

UMAP_PARAMS = {"n_neighbors": 15, "min_dist": 0.1, "metric": METRIC, "random_state": 0, "n_jobs": 1}


@torch.no_grad()
def embed_images(model, images, meta: dict, batch_size: int, device: torch.device,
                 tick: Callable[[int], None] = lambda n: None) -> np.ndarray:
    """float16 ``(N, D)`` features of uint8 ``images`` ``(N, C, H, W)`` (an array or anything indexed
    like one, e.g. a lazily decoding image folder), ``batch_size`` images per forward pass."""
    model.eval()
    out = None
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        e = model.embed(to_input(images[start:stop], meta).to(device)).float().cpu().numpy()
        if out is None:
            out = np.zeros((len(images), e.shape[1]), dtype=np.float16)
        out[start:stop] = e
        tick(stop - start)
    return out


def embed_image(run, image) -> np.ndarray:
    """float32 ``(D,)`` features of one uint8 ``(C, H, W)`` image of LoadedRun ``run`` (an upload)."""
    with torch.no_grad():
        return inference_model(run).embed(to_input(image, run.meta))[0].float().numpy()


def umap_params(m: int) -> dict:
    """:data:`UMAP_PARAMS` for ``m`` test images: ``n_neighbors`` at most ``m - 1`` (a point has no more
    neighbours), which umap-learn would otherwise impose itself with a warning; at least 2, its minimum."""
    return {**UMAP_PARAMS, "n_neighbors": max(2, min(UMAP_PARAMS["n_neighbors"], m - 1))}


def umap_coords(test: np.ndarray) -> np.ndarray:
    """float32 ``(M, 2)`` UMAP of embeddings ``(M, D)`` (:func:`umap_params`; seeded, hence single-threaded)."""
    import umap

    reducer = umap.UMAP(n_components=2, **umap_params(len(test)))
    return reducer.fit_transform(np.asarray(test, dtype=np.float32)).astype(np.float32)


def precompute_embeddings(run_dir, data_dir=None, *, batch_size: int = 500, device: str = "auto",
                          progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``run_dir/embedding_map.npz`` and ``run_dir/embeddings.npz``; returns the latter's path.

    ``progress(done, total)`` counts images embedded (training, then test), then one step for the maps.
    """
    run_dir, dev = Path(run_dir), pick_device(device)
    run = load_run(run_dir)  # verifies the weights and predictions
    meta = run.meta
    train = training_split(meta, data_dir)
    test_x, _ = load_test_split(meta["dataset"], data_dir, meta["input_size"])
    model = run.load_model(str(dev)).to(memory_format=torch.channels_last).requires_grad_(False)
    total, done = len(train.labels) + len(test_x) + 1, 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    batch_size = max(1, int(batch_size))
    train_emb = embed_images(model, train.images, meta, batch_size, dev, tick)
    test_emb = embed_images(model, test_x, meta, batch_size, dev, tick)
    pca, variance = pca_coords(test_emb)
    write(run_dir, EMBEDDING_MAP, meta, {
        "pca": pca, "umap": umap_coords(test_emb),
        "config": np.array(json.dumps({"umap": umap_params(len(test_emb)), "pca_explained_variance": variance}))})
    config = {"features": "model.embed(x): the input of the classification head", "precision": "float32",
              "stored_as": "float16", "train_fingerprint": train.fingerprint, "metric": METRIC}
    path = write(run_dir, EMBEDDINGS, meta, {"train": train_emb, "train_label": train.labels, "test": test_emb,
                                             "config": np.array(json.dumps(config))})
    tick(1)
    return path
