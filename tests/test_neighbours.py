"""Nearest training examples: the search equals a brute-force one, the stored embeddings are the model's
penultimate features (checked against the classification head's input and the trainer's own predictions),
stale files are refused, and ``precompute embeddings`` works end to end on the digits demo."""
from __future__ import annotations

import dataclasses
import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.distance import cdist

from tests.conftest import CHECKPOINTS
from trainer.rundir import load_run
from trainer.sources import DatasetUnavailable
from xai_dashboard import cli, embedding_space, embeddings
from xai_dashboard.app import create_app
from xai_dashboard.embeddings_file import load_embeddings, load_map, training_split
from xai_dashboard.store import RunStore


def brute_force(train: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest cosine distances (scipy, float64) of the whole distance row, stably sorted."""
    d = cdist(query[None].astype(np.float64), train.astype(np.float64), metric="cosine")[0]
    order = np.argsort(d, kind="stable")[:k]
    return order, d[order]


def assert_same_neighbours(got_idx, got_dist, want_idx, want_dist, full_row):
    np.testing.assert_allclose(got_dist, want_dist, atol=2e-6)
    # identical indices, except where two training images are equally far (float32 vs float64 may swap them)
    swapped = got_idx != want_idx
    assert np.allclose(full_row[got_idx[swapped]], full_row[want_idx[swapped]], atol=2e-6)


def test_nearest_equals_brute_force_on_random_embeddings():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(5000, 64)).astype(np.float16)
    unit = embedding_space.unit_rows(train)
    for q in rng.normal(size=(20, 64)).astype(np.float16):
        idx, dist = embedding_space.nearest(unit, q.astype(np.float32), 8)
        want_idx, want_dist = brute_force(train, q, 8)
        full = cdist(q[None].astype(np.float64), train.astype(np.float64), metric="cosine")[0]
        assert_same_neighbours(idx, dist, want_idx, want_dist, full)


def test_nearest_handles_k_larger_than_the_set_and_exact_duplicates():
    train = np.array([[1, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    idx, dist = embedding_space.nearest(embedding_space.unit_rows(train), np.array([2.0, 0.0]), 10)
    assert idx.tolist() == [0, 2, 3, 1]  # duplicates by lower index first
    np.testing.assert_allclose(dist, [0, 0, 1 - np.sqrt(0.5), 1], atol=1e-6)


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    """A copy of the digits demo without its embeddings, then ``precompute embeddings`` through the CLI.

    UMAP's numba compilation alone takes ~35 s per process on 2 cores, so here the map's second
    projection is the PCA again; the shipped maps, made by the real job, are checked below."""
    run_dir = tmp_path_factory.mktemp("emb") / "digits-demo"
    shutil.copytree(CHECKPOINTS / "digits-demo", run_dir)
    for name in ("embeddings.npz", "embedding_map.npz"):
        (run_dir / name).unlink(missing_ok=True)
    assert load_embeddings(run_dir, load_run(run_dir).meta)[0] is None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(embeddings, "umap_coords", lambda test: embedding_space.pca_coords(test)[0])
        assert cli.main(["precompute", "embeddings", str(run_dir), "--device", "cpu", "--batch-size", "128"]) == 0
    return run_dir


def test_precompute_writes_both_files(computed):
    meta = load_run(computed).meta
    data, note = load_embeddings(computed, meta)
    assert note == ""
    n_train, n_test = meta["dataset"]["num_train"], meta["dataset"]["num_test"]
    assert data["train"].shape == (n_train, 84) and data["train"].dtype == np.float16
    assert data["test"].shape == (n_test, 84)
    split = training_split(meta)
    assert np.array_equal(data["train_label"], split.labels)
    assert data["config"]["train_fingerprint"] == split.fingerprint
    maps, note = load_map(computed, meta)
    assert note == "" and maps["umap"].shape == maps["pca"].shape == (n_test, 2)
    assert np.isfinite(maps["umap"]).all()
    assert sorted(p.name for p in computed.iterdir() if ".tmp" in p.name) == []


def test_embeddings_are_the_input_of_the_classification_head(computed):
    """Independently of ``embed``: a forward hook on the head records what the full forward pass feeds it."""
    run = load_run(computed)
    data, _ = load_embeddings(computed, run.meta)
    model = run.load_model("cpu")
    seen = []
    handle = model.head.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach()))
    try:
        from xai_dashboard.explain import to_input

        with torch.no_grad():
            model(to_input(training_split(run.meta).images[:200], run.meta))
    finally:
        handle.remove()
    np.testing.assert_allclose(data["train"][:200].astype(np.float32), seen[0].numpy(), rtol=2e-3, atol=2e-3)


def test_test_embeddings_match_the_trainers_predictions(computed):
    """The trainer stored the same features with its predictions (trainer.evaluate.predict, float16)."""
    run = load_run(computed)
    data, _ = load_embeddings(computed, run.meta)
    np.testing.assert_allclose(data["test"].astype(np.float32), run.predictions["embedding"].astype(np.float32),
                               rtol=2e-3, atol=2e-3)


def test_pca_map_is_the_leading_principal_components(computed):
    """Against numpy's SVD of the centred test embeddings (each axis up to its sign)."""
    run = load_run(computed)
    test = load_embeddings(computed, run.meta)[0]["test"].astype(np.float64)
    centred = test - test.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    want = centred @ vt[:2].T
    got = load_map(computed, run.meta)[0]["pca"]
    for axis in range(2):
        sign = np.sign(np.dot(got[:, axis], want[:, axis]))
        np.testing.assert_allclose(sign * got[:, axis], want[:, axis], atol=1e-3 * np.abs(want).max())


def test_stored_embeddings_are_refused_for_other_weights_test_set_or_training_set(computed):
    meta = load_run(computed).meta
    other = {**meta, "weights_sha256": "0" * 64}
    data, note = load_embeddings(computed, other)
    assert data is None and "embeddings.npz" in note and "weights" in note
    assert "precompute embeddings" in note
    assert load_map(computed, other)[0] is None
    data, note = load_embeddings(computed, {**meta, "dataset": {**meta["dataset"], "fingerprint": "f" * 16}})
    assert data is None and "test set" in note
    data, note = load_embeddings(computed, {**meta, "dataset": {**meta["dataset"], "num_train": 1000,
                                                                 "train_subset": 1000}})
    assert data is None and "training set" in note


def test_neighbours_of_a_test_image_equal_brute_force_over_the_stored_file(computed):
    store = RunStore.from_dirs([computed])
    run = store.get(None)
    data, _ = load_embeddings(computed, run.meta)
    for i in (0, 7, 123):
        found, note = embedding_space.neighbours_of(run, test_index=i, k=8)
        assert note == ""
        want_idx, want_dist = brute_force(data["train"], data["test"][i], 8)
        full = cdist(data["test"][i][None].astype(np.float64), data["train"].astype(np.float64), "cosine")[0]
        assert_same_neighbours(found.index, found.distance, want_idx, want_dist, full)
        assert np.array_equal(found.label, data["train_label"][found.index])


def test_an_uploaded_copy_of_a_test_image_has_its_neighbours(computed):
    run = RunStore.from_dirs([computed]).get(None)
    i = 42
    stored, _ = embedding_space.neighbours_of(run, test_index=i)
    uploaded, _ = embedding_space.neighbours_of(run, image=np.ascontiguousarray(run.images[i]))
    assert np.array_equal(stored.index, uploaded.index)
    np.testing.assert_allclose(stored.distance, uploaded.distance, atol=1e-3)


def test_a_stale_file_gives_a_reason_not_neighbours(computed, tmp_path):
    stale = tmp_path / "digits-demo"
    shutil.copytree(computed, stale)
    run = RunStore.from_dirs([stale]).get(None)
    run.run = dataclasses.replace(run.run, meta={**run.meta, "weights_sha256": "1" * 64})
    found, note = embedding_space.neighbours_of(run, test_index=0)
    assert found is None and "weights" in note


def test_training_images_route_serves_the_indexed_images(computed, tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    app = create_app(store=RunStore.from_dirs([computed]))
    client, run = app.server.test_client(), app.server.config["XAI_STORE"].get(None)
    split = training_split(run.meta)
    for i in (0, 500, len(split.labels) - 1):
        r = client.get(f"/img/{run.name}/train/{i}.png?size=32")
        assert r.status_code == 200 and r.mimetype == "image/png"
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.data))), split.images[i][0])  # one channel
    assert client.get(f"/img/{run.name}/train/{len(split.labels)}.png").status_code == 404
    assert client.get(f"/img/{run.name}/train/-1.png").status_code == 404
    assert client.get(f"/img/nope/train/0.png").status_code == 404
    # memory-mapped from the private cache by the next process
    assert list((tmp_path / "cache" / "training").glob("*.npy"))


def test_training_images_of_another_fingerprint_are_refused(computed, tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    run = RunStore.from_dirs([computed]).get(None)
    with pytest.raises(DatasetUnavailable, match="not those the embeddings were computed on"):
        embedding_space._training_images(run, "0123456789abcdef", None)


def test_shipped_digits_demo_embeddings_are_current():
    run = load_run(CHECKPOINTS / "digits-demo")
    data, note = load_embeddings(run.path, run.meta)
    assert note == "", note
    assert data["config"]["metric"] == "cosine"
    assert load_map(run.path, run.meta)[1] == ""


@pytest.mark.parametrize("run", ["digits-demo", "cifar10-fast", "cifar10-simple_cnn"])
def test_shipped_umap_keeps_neighbourhoods_better_than_pca(run):
    """Trustworthiness (Venna & Kaski; scikit-learn) of the shipped 2-D maps against the test embeddings the
    trainer stored: UMAP's neighbourhoods must be the embedding's far more than PCA's."""
    from sklearn.manifold import trustworthiness

    loaded = load_run(CHECKPOINTS / run)
    maps, note = load_map(loaded.path, loaded.meta)
    if maps is None:
        pytest.skip(note)
    emb = loaded.predictions["embedding"].astype(np.float32)
    pick = np.random.default_rng(0).choice(len(emb), min(len(emb), 3000), replace=False)
    umap_t = trustworthiness(emb[pick], maps["umap"][pick], n_neighbors=10, metric="cosine")
    pca_t = trustworthiness(emb[pick], maps["pca"][pick], n_neighbors=10, metric="cosine")
    assert umap_t > 0.9 and umap_t > pca_t + 0.05, (umap_t, pca_t)


def test_fast_model_features_are_model_embed_and_the_heads_input(cifar_dir):
    """cifar10-fast: what the job computes for training images equals ``model.embed`` and the input the
    head receives in a full forward pass; for test images, the trainer's stored embedding column."""
    from xai_dashboard.embeddings import embed_images
    from xai_dashboard.explain import to_input

    run = load_run(CHECKPOINTS / "cifar10-fast")
    split = training_split(run.meta, cifar_dir)
    got = embed_images(run.load_model("cpu"), split.images[:128], run.meta, 64, torch.device("cpu"))
    model, seen = run.load_model("cpu"), []
    handle = model.head.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            x = to_input(split.images[:128], run.meta)
            direct = model.embed(x)
            model(x)
    finally:
        handle.remove()
    np.testing.assert_allclose(got.astype(np.float32), direct.numpy(), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(direct.numpy(), seen[0].numpy(), rtol=1e-6, atol=1e-6)
    from trainer.sources import load_test_split

    test_x, _ = load_test_split(run.meta["dataset"], cifar_dir, run.meta["input_size"])
    got = embed_images(model, test_x[:128], run.meta, 64, torch.device("cpu")).astype(np.float32)
    np.testing.assert_allclose(got, run.predictions["embedding"][:128].astype(np.float32), rtol=5e-3, atol=5e-3)
