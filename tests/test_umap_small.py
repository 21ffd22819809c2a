"""UMAP of a tiny test set (the probe's ``big``: 12 images): ``n_neighbors`` at most n - 1, chosen and
recorded by the embeddings job rather than imposed by umap-learn with a warning."""
from __future__ import annotations

import warnings

import numpy as np

from tests.conftest import CHECKPOINTS
from trainer.rundir import load_run
from xai_dashboard.embeddings import UMAP_PARAMS, umap_coords, umap_params

M = 12


def test_a_tiny_test_set_gets_n_minus_1_neighbours_without_a_warning():
    features = load_run(CHECKPOINTS / "digits-demo").predictions["embedding"][:M]  # real penultimate features
    assert UMAP_PARAMS["n_neighbors"] > M - 1  # the case the probe hit
    assert umap_params(M)["n_neighbors"] == M - 1 and umap_params(10_000) == UMAP_PARAMS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xy = umap_coords(features)
    assert not [w for w in caught if "n_neighbors" in str(w.message)], [str(w.message) for w in caught]
    assert xy.shape == (M, 2) and np.isfinite(xy).all()
