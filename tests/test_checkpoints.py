"""Shipped runs in checkpoints/: valid, hashes match, and the stored logits are what the weights compute.

This ties the numbers committed in meta.json/predictions.npz to the committed weights.
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import CHECKPOINTS, _cifar_dir
from trainer.data import load_test_split
from trainer.evaluate import accuracy, predict
from trainer.rundir import find_runs, load_run, sha256_file

SHIPPED = find_runs(CHECKPOINTS)


def test_checkpoints_folder_is_small():
    total = sum(f.stat().st_size for f in CHECKPOINTS.rglob("*") if f.is_file())
    assert total < 40 * 2**20, f"checkpoints/ is {total / 2**20:.1f} MB"


@pytest.mark.parametrize("run_dir", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_run_reproduces_its_predictions(run_dir):
    run = load_run(run_dir)
    assert sha256_file(run_dir / "model.safetensors") == run.meta["weights_sha256"]
    assert run.meta["provenance"]["command"].startswith("xai-train")
    stored = run.predictions
    assert accuracy(stored["logits"], stored["label"]) == pytest.approx(run.meta["test_accuracy"], abs=1e-9)
    if run.meta["dataset"]["name"] == "cifar10" and _cifar_dir() is None:
        pytest.skip("CIFAR-10 npz files not found: set XAI_DATA_DIR to ../shared/data/cifar10")
    x, y = load_test_split(run.meta["dataset"], _cifar_dir(), run.meta["input_size"])
    assert np.array_equal(y.numpy(), stored["label"])
    idx = np.random.default_rng(0).choice(len(y), size=min(500, len(y)), replace=False)
    logits, _ = predict(run.load_model(), x[idx], run.meta["mean"], run.meta["std"])
    np.testing.assert_allclose(logits, stored["logits"][idx], atol=1e-3)
