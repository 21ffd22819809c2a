"""Sanity checks (Adebayo et al. 2018): SSIM and Spearman against hand computations, the block rule,
the cascade on the digits demo (randomised Grad-CAM differs; an interrupted run continues), sanity.json
refused when the weights or test set change, and the badge in the explanations view."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tests.conftest import CHECKPOINTS
from trainer import artifacts
from trainer.rundir import load_run
from xai_dashboard import cli, sanity
from xai_dashboard.sanity_file import BADGE, REFERENCE, SANITY, THRESHOLD, failing_methods, load_sanity

# ------------------------------------------------------------------ SSIM, Spearman, CI by hand


def _window() -> np.ndarray:
    """Wang et al.'s 11 x 11 Gaussian window, sigma 1.5, normalised to sum 1."""
    k = np.arange(-5, 6)
    g = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * 1.5 ** 2))
    return g / g.sum()


def _ssim_one_window(x: np.ndarray, y: np.ndarray, L: float = 1.0) -> float:
    """Eq. 13 of Wang et al. (2004) with the weighted statistics of Eq. 14-16 on one 11 x 11 patch."""
    w = _window()
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
    cxy = (w * (x - mx) * (y - my)).sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    return (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))


def test_ssim_equals_hand_computation():
    # two constant patches: variances and covariance vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = np.full((1, 11, 11), 1.0), np.full((1, 11, 11), 0.5)
    assert sanity.ssim(a, b)[0] == pytest.approx((2 * 0.5 + 1e-4) / (1.25 + 1e-4), rel=1e-12)
    rng = np.random.default_rng(0)
    x, y = rng.random((12, 12)), rng.random((12, 12))
    # a 12 x 12 map has 2 x 2 window positions; the SSIM is the mean over them
    by_hand = np.mean([_ssim_one_window(x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11])
                       for i in range(2) for j in range(2)])
    assert sanity.ssim(x[None], y[None])[0] == pytest.approx(by_hand, rel=1e-10)
    assert sanity.ssim(np.stack([x, y]), np.stack([x, y])) == pytest.approx([1.0, 1.0], abs=1e-12)
    # data range: doubling the maps and L together changes nothing
    assert sanity.ssim(2 * x[None], 2 * y[None], data_range=2.0)[0] == pytest.approx(by_hand, rel=1e-10)


def test_spearman_and_ci_by_hand():
    a = np.array([[[1.0, 2.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])
    b = np.array([[[1.0, 3.0], [2.0, 4.0]], [[0.0, 1.0], [2.0, 3.0]]])
    rho = sanity.spearman(a, b)
    assert rho[0] == pytest.approx(1 - 6 * 2 / (4 * (16 - 1)))  # 1 - 6 sum d^2 / (n (n^2 - 1)) = 0.8
    assert np.isnan(rho[1])  # a constant map has no ranking
    s = sanity.summary(np.array([1.0, 2.0, 3.0]))  # mean 2, sd 1, t(0.975, 2 df) = 4.3027 (tables)
    assert s["mean"] == 2.0 and s["n"] == 3
    assert s["ci95"] == pytest.approx([2 - 4.302653 / np.sqrt(3), 2 + 4.302653 / np.sqrt(3)], rel=1e-6)


# ------------------------------------------------------------------ blocks, randomisation, image choice

def test_blocks_follow_the_rule():
    lenet = load_run(CHECKPOINTS / "digits-demo").load_model()
    assert [b for b, _ in sanity.parameterised_blocks(lenet)] == [
        "features.block1", "features.block2", "classifier.fc1", "classifier.fc2", "head"]
    from trainer.models import create_model

    fast = create_model("fast", num_classes=10, in_channels=3)
    blocks = dict(sanity.parameterised_blocks(fast))
    assert list(blocks) == ["whiten", "blocks.block1", "blocks.block2", "blocks.block3", "head"]
    assert len(blocks["blocks.block2"]) == 4  # two convs and two norms


def test_randomise_is_seeded_and_touches_only_its_block():
    model = load_run(CHECKPOINTS / "digits-demo").load_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = dict(sanity.parameterised_blocks(model))["head"]
    sanity.randomise(head, seed=7)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}
    again = load_run(CHECKPOINTS / "digits-demo").load_model()
    sanity.randomise(dict(sanity.parameterised_blocks(again))["head"], seed=7)
    assert torch.equal(again.head.weight, model.head.weight)


def test_stratified_indices():
    labels = np.repeat(np.arange(10), 30)
    idx = sanity.stratified_indices(labels, 45, seed=0)
    assert len(set(idx.tolist())) == 45 and np.all(np.diff(idx) > 0)
    counts = np.bincount(labels[idx], minlength=10)
    assert counts.min() == 4 and counts.max() == 5
    assert np.array_equal(idx, sanity.stratified_indices(labels, 45, seed=0))


# ------------------------------------------------------------------ the cascade on the digits demo

@pytest.fixture(scope="module")
def digits_sanity(tmp_path_factory):
    """A copy of digits-demo with sanity.json for 40 images, written by the CLI (permuted-label
    training shortened to 3 epochs: the cascade is what is tested here)."""
    run_dir = tmp_path_factory.mktemp("sanity") / "digits"
    shutil.copytree(CHECKPOINTS / "digits-demo", run_dir)
    (run_dir / SANITY.name).unlink(missing_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sanity, "PERMUTED_EPOCHS", 3)
        assert cli.main(["precompute", "sanity", str(run_dir), "--images", "40"]) == 0
    return run_dir


def test_fully_randomised_gradcam_differs(digits_sanity):
    meta = load_run(digits_sanity).meta
    data, problem = load_sanity(digits_sanity, meta)
    assert problem == "" and data["complete"]
    assert data["config"]["blocks"] == ["features.block1", "features.block2", "classifier.fc1", "classifier.fc2",
                                        "head"]
    steps = data["cascade"]["gradcam"]
    assert [s["block"] for s in steps] == data["config"]["blocks"][::-1]
    assert steps[-1]["randomised"] == data["config"]["blocks"][::-1]
    assert steps[-1]["spearman"]["n"] == 40 and steps[-1]["spearman"]["mean"] < 0.5
    assert set(data["cascade"]) == {"gradcam", "guided_gradcam", "integrated_gradients", "saliency", "occlusion"}
    assert set(data["data_randomisation"]["methods"]) == set(data["cascade"])
    assert len(set(data["images"])) == 40


def test_interrupted_cascade_continues(digits_sanity):
    meta = load_run(digits_sanity).meta
    full = artifacts.read(digits_sanity, SANITY, meta)
    partial = json.loads(json.dumps(full))
    for steps in partial["cascade"].values():
        del steps[2:]
    partial["complete"] = False
    artifacts.write(digits_sanity, SANITY, meta, partial)
    assert "unfinished (2 of 5 blocks randomised)" in load_sanity(digits_sanity, meta)[1]
    seen = []
    sanity.precompute_sanity(digits_sanity, images=40, progress=lambda done, total: seen.append(total))
    # the trained model's maps plus the three missing steps, five methods, 40 images; no retraining
    assert seen[-1] == (1 + 3) * 5 * 40
    resumed = artifacts.read(digits_sanity, SANITY, meta)
    assert resumed["complete"]
    for method, steps in full["cascade"].items():
        got = resumed["cascade"][method]
        assert [s["block"] for s in got] == [s["block"] for s in steps]
        # the same seeded random weights: the continued steps equal the uninterrupted run's
        assert [s["ssim"]["mean"] for s in got] == pytest.approx([s["ssim"]["mean"] for s in steps], abs=1e-5)


def test_refused_when_weights_or_test_set_change(digits_sanity):
    meta = load_run(digits_sanity).meta
    data, problem = load_sanity(digits_sanity, {**meta, "weights_sha256": "f" * 64})
    assert data is None and "sanity.json: computed for weights" in problem
    assert f"xai-dashboard precompute sanity {digits_sanity}" in problem
    data, problem = load_sanity(digits_sanity, {**meta, "dataset": {**meta["dataset"], "fingerprint": "0" * 16}})
    assert data is None and "computed for test set" in problem


def test_missing_file_says_how_to_compute_it(tmp_path):
    meta = load_run(CHECKPOINTS / "digits-demo").meta
    data, problem = load_sanity(tmp_path, meta)
    assert data is None and problem == f"sanity.json: not computed; rerun `xai-dashboard precompute sanity {tmp_path}`"


# ------------------------------------------------------------------ the badge and the plot

def _data(final: dict[str, float], complete: bool = True) -> dict:
    def step(block, value):
        return {"block": block, "randomised": [block], "spearman": {"mean": value, "ci95": [value - .1, value + .1]},
                "ssim": {"mean": value / 2, "ci95": [value / 2 - .1, value / 2 + .1]}}
    return {"config": {"blocks": ["a", "head"]}, "complete": complete,
            "cascade": {m: [step("head", 0.9), step("a", v)] for m, v in final.items()}}


def test_badge_for_a_method_above_the_threshold_only():
    from xai_dashboard.views.explain_sanity import flag_failing, sanity_badge
    from xai_dashboard.views.explain_model import method_options

    data = _data({"guided_gradcam": 0.71, "gradcam": 0.12, "saliency": THRESHOLD})
    failing = failing_methods(data)
    assert failing == {"guided_gradcam": 0.71}
    badge = str(sanity_badge("guided_gradcam", failing))
    assert BADGE in badge and REFERENCE in badge and "0.71" in badge
    assert sanity_badge("gradcam", failing) == [] and sanity_badge("saliency", failing) == []
    options = {o["value"]: o for o in flag_failing(method_options(), failing)}
    assert BADGE in options["guided_gradcam"]["label"] and REFERENCE in options["guided_gradcam"]["title"]
    assert BADGE not in options["gradcam"]["label"]
    assert failing_methods(_data({"guided_gradcam": 0.71}, complete=False)) == {}  # unfinished: no verdict


def test_cascade_figure_has_a_line_per_method_and_the_threshold():
    from xai_dashboard.views.explain_model import cascade_figure

    fig = cascade_figure(_data({"guided_gradcam": 0.71, "gradcam": 0.12}), "ssim")
    assert [t.name for t in fig.data] == ["Guided Grad-CAM", "Grad-CAM"]
    assert list(fig.data[1].x) == ["none", "head", "a"] and list(fig.data[1].y) == [1.0, 0.45, 0.06]
    assert fig.layout.shapes[0].y0 == THRESHOLD
