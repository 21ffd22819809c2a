"""Shipped runs in checkpoints/: valid, hashes match, and the stored logits are what the weights compute.

This ties the numbers committed in meta.json/predictions.npz to the committed weights.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import CHECKPOINTS, _cifar_dir
from trainer.evaluate import accuracy, predict
from trainer.rundir import find_runs, load_run, sha256_file
from trainer.sources import load_test_split

SHIPPED = find_runs(CHECKPOINTS)


def _shipped_files() -> list[Path]:
    """The files a clone carries under checkpoints/: git's tracked and untracked-but-not-ignored ones (a
    locally made ``embeddings.npz``, which .gitignore keeps out of the repository, is not shipped); every
    file when this is not a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                              str(CHECKPOINTS)], cwd=CHECKPOINTS.parent, capture_output=True, check=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return [f for f in CHECKPOINTS.rglob("*") if f.is_file()]
    return [f for f in (CHECKPOINTS.parent / p for p in out.decode().split("\0") if p) if f.is_file()]


def test_checkpoints_folder_is_small():
    """Every clone carries checkpoints/: each shipped run under 16 MB, all of them under 56 MB (raised from
    40 MB when the AugMix variant of cifar10-fast, issue #11, became the third shipped CIFAR-10 run)."""
    files = _shipped_files()
    sizes = {d.name: sum(f.stat().st_size for f in files if d in f.parents) for d in SHIPPED}
    assert all(size < 16 * 2**20 for size in sizes.values()), {k: f"{v / 2**20:.1f} MB" for k, v in sizes.items()}
    total = sum(f.stat().st_size for f in files)
    assert total < 56 * 2**20, f"checkpoints/ is {total / 2**20:.1f} MB"


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
    assert np.array_equal(y, stored["label"])
    idx = np.random.default_rng(0).choice(len(y), size=min(500, len(y)), replace=False)
    logits, _ = predict(run.load_model(), torch.from_numpy(x[idx]), run.meta["mean"], run.meta["std"])
    np.testing.assert_allclose(logits, stored["logits"][idx], atol=1e-3)


@pytest.mark.parametrize("run_dir", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_summary_is_what_its_predictions_give(run_dir):
    """summary.json ships with each run so that no launch recomputes metrics; it must be current."""
    from xai_dashboard import analysis, summaries
    from xai_dashboard.store import softmax

    run = load_run(run_dir)
    names = tuple(run.class_names)
    p = analysis.Predictions(analysis.content_key(run.meta), run.predictions["label"].astype(np.int64),
                             softmax(run.predictions["logits"]))
    from trainer.artifacts import read

    stored = read(run_dir, summaries.SUMMARY, run.meta)  # refused when stale: delete it and open the dashboard
    got, want = summaries.RunSummary.from_json(stored), summaries.compute_summary(p, names)
    assert np.array_equal(got.cm, want.cm) and got.pairs == want.pairs
    assert got.overall == pytest.approx(want.overall)
    scores = ("precision", "recall", "f1")
    for g, w in zip(got.per_class, want.per_class, strict=True):
        assert (g["class"], g["support"]) == (w["class"], w["support"])
        assert [g[m] for m in scores] == pytest.approx([w[m] for m in scores])
    assert got.overall["accuracy"] == pytest.approx(run.meta["test_accuracy"], abs=1e-9)
