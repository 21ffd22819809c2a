"""Faithfulness measures: deletion/insertion (RISE), ROAD imputation, baselines, the verdict.

Expected values come from the published definitions worked by hand on tiny images and
models whose output depends on a known pixel set, never from re-running the module's steps.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from xai_dashboard.faithfulness import (
    auc, baselines, deletion_insertion, edge_map, faithfulness, perturbation_curves, random_maps, removal_ranks, road,
    verdict,
)
from xai_dashboard.road import impute

ROOT = Path(__file__).resolve().parent.parent
CIFAR_FAST = ROOT / "checkpoints" / "cifar10-fast"


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


class PixelSetModel(nn.Module):
    """Logit of class 0 = sum of the input over the pixel set S (all channels); class 1 = 0.

    So p(class 0) = sigmoid(sum over S).
    """

    def __init__(self, h: int, w: int, pixels):
        super().__init__()
        mask = torch.zeros(1, 1, h, w)
        for r, c in pixels:
            mask[0, 0, r, c] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x):
        s = (x * self.mask).sum((1, 2, 3))
        return torch.stack([s, torch.zeros_like(s)], 1)


S4 = [(0, 1), (1, 3), (2, 0), (3, 2)]  # four pixels of a 4x4 image


def indicator(h, w, pixels) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.float32)
    for r, c in pixels:
        m[r, c] = 1.0
    return m


def test_trapezoid_auc_normalisation():
    for c in (0.0, 0.37, 1.0):
        assert auc(np.full(33, c)) == pytest.approx(c)
    assert auc(np.linspace(0, 1, 5)) == pytest.approx(0.5)  # the diagonal: half the unit square
    assert auc([1.0, 0.0]) == pytest.approx(0.5)


def test_ties_follow_row_major_order():
    assert removal_ranks(np.ones((3, 3)))[0].tolist() == list(range(9))
    # 2 first, the two 1s in row-major order, then 0
    assert removal_ranks(np.array([[1.0, 1.0], [2.0, 0.0]]))[0].tolist() == [1, 2, 0, 3]


def test_deletion_auc_by_hand():
    model = PixelSetModel(4, 4, S4).eval()
    x = torch.ones(1, 4, 4)  # sum over S = 4 at the start; deleted pixels become 0
    right, wrong = indicator(4, 4, S4), -indicator(4, 4, S4)
    ranks = removal_ranks(np.stack([right, wrong]))
    dele, _ = deletion_insertion(model, x, 0, ranks, steps=4)
    # 16 pixels, 4 steps: 4 pixels per step. Right map: all of S gone after step 1.
    p4, p0 = sigmoid(4), 0.5
    assert dele[0] == pytest.approx([p4, p0, p0, p0, p0], abs=1e-6)
    assert dele[1] == pytest.approx([p4, p4, p4, p4, p0], abs=1e-6)  # reversed: S last
    # trapezoid with dx = 1/4
    assert auc(dele[0]) == pytest.approx(0.25 * (p4 / 2 + 3 * p0 + p0 / 2), abs=1e-6)  # 0.560252
    assert auc(dele[0]) == pytest.approx(0.560252, abs=1e-6)
    assert auc(dele[1]) == pytest.approx(0.25 * (p4 / 2 + 3 * p4 + p0 / 2), abs=1e-6)  # 0.921762
    # step 1 removes two pixels of S and two others, step 2 the rest of S: sums 4, 2, 0, 0, 0
    half = np.zeros((4, 4))
    half[0, 1] = half[1, 3] = 3.0
    half[0, 0] = half[0, 2] = 2.0
    half[2, 0] = half[3, 2] = 1.0
    dele_half, _ = deletion_insertion(model, x, 0, removal_ranks(half), steps=4)
    assert dele_half[0] == pytest.approx([p4, sigmoid(2), p0, p0, p0], abs=1e-6)
    # no ordering does better than S first, or worse than S last
    perms = np.stack([np.random.default_rng(s).permutation(16).reshape(4, 4) for s in range(40)]).astype(float)
    others = auc(deletion_insertion(model, x, 0, removal_ranks(perms), steps=4)[0])
    assert (auc(dele[0]) <= others + 1e-9).all() and (others <= auc(dele[1]) + 1e-9).all()


def test_insertion_prefers_the_right_map():
    model = PixelSetModel(4, 4, S4).eval()
    x = torch.from_numpy(indicator(4, 4, S4))[None] * 2.0  # 2 on S, 0 elsewhere
    # RISE's start: a Gaussian blur of the image (sigma 5; kernel 3, the largest a 4x4 image takes)
    b = gaussian_blur(x, [3, 3], [5.0, 5.0])
    start = float(sum(b[0, r, c] for r, c in S4))
    maps = np.stack([indicator(4, 4, S4), -indicator(4, 4, S4)])
    _, ins = deletion_insertion(model, x, 0, removal_ranks(maps), steps=4)
    p_start, p_end = sigmoid(start), sigmoid(8.0)
    assert ins[0] == pytest.approx([p_start, p_end, p_end, p_end, p_end], abs=1e-6)
    assert ins[1] == pytest.approx([p_start, p_start, p_start, p_start, p_end], abs=1e-6)
    perms = np.stack([np.random.default_rng(s).permutation(16).reshape(4, 4) for s in range(40)]).astype(float)
    others = auc(deletion_insertion(model, x, 0, removal_ranks(perms), steps=4)[1])
    assert (others <= auc(ins[0]) + 1e-9).all() and (auc(ins[1]) <= others + 1e-9).all()


def test_curves_cover_0_and_100_percent_with_equal_steps():
    model = PixelSetModel(4, 4, [(0, 0)]).eval()
    x = torch.zeros(1, 4, 4)
    # pixel (0, 0) is ranked 5th: it switches to `end` (value 1) at the step reaching 5 pixels
    amap = -np.arange(16, dtype=float).reshape(4, 4)
    amap[0, 0] = amap.flat[5] - 0.5  # just below the 5th largest: rank 5 (0-based)
    probs = perturbation_curves(model, x, torch.ones(1, 4, 4), removal_ranks(amap), 0, steps=8)
    # 8 steps of 2 pixels: counts 0, 2, 4, 6, ... -> pixel of rank 5 shown from step 3 on
    assert probs[0].tolist() == pytest.approx([0.5] * 3 + [sigmoid(1)] * 6, abs=1e-6)


def test_road_imputation_is_the_weighted_neighbour_mean():
    img = np.arange(9, dtype=np.float64).reshape(1, 3, 3) ** 2  # 0 1 4 / 9 16 25 / 36 49 64
    centre = np.zeros((3, 3), bool)
    centre[1, 1] = True
    out = impute(img, centre, noise=0.0)
    direct, diagonal = 1 + 9 + 25 + 49, 0 + 4 + 36 + 64
    assert out[0, 1, 1] == pytest.approx(direct / 6 + diagonal / 12)  # 30.6667
    assert np.array_equal(np.delete(out.ravel(), 4), np.delete(img.ravel(), 4).astype(np.float32))
    # two removed neighbours, one in a corner: each equals the weighted mean of its in-image
    # neighbours (weights renormalised), the other's imputed value included
    removed = np.zeros((3, 3), bool)
    removed[0, 0] = removed[1, 1] = True
    v = impute(img, removed, noise=0.0)[0].astype(np.float64)
    corner = (v[0, 1] / 6 + v[1, 0] / 6 + v[1, 1] / 12) / (5 / 12)
    middle = (v[0, 1] + v[1, 0] + v[1, 2] + v[2, 1]) / 6 + (v[0, 0] + v[0, 2] + v[2, 0] + v[2, 2]) / 12
    assert v[0, 0] == pytest.approx(corner, rel=1e-5) and v[1, 1] == pytest.approx(middle, rel=1e-5)
    # solved by hand: a = (1/6 + 9/6 + b/12) / (5/12) = 4 + b/5 and b = (1 + 9 + 25 + 49)/6 + (a + 4 + 36 + 64)/12
    # -> a = 512/59 = 8.6780, b = 1380/59 = 23.3898
    assert v[0, 0] == pytest.approx(512 / 59, rel=1e-5) and v[1, 1] == pytest.approx(1380 / 59, rel=1e-5)


def test_road_noise_is_small_gaussian_on_imputed_pixels_only():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(3, 32, 32))
    removed = rng.random((32, 32)) < 0.5
    clean = impute(img, removed, noise=0.0)
    noisy = impute(img, removed, noise=0.01, rng=np.random.default_rng(7))
    diff = (noisy - clean)[:, removed]
    assert np.array_equal(noisy[:, ~removed], clean[:, ~removed])
    assert 0.009 < diff.std() < 0.011 and abs(diff.mean()) < 0.001


def test_road_morf_of_the_pixel_set_drops_the_output_most():
    pixels = [(1, 1), (1, 6), (6, 1), (5, 5)]  # no two adjacent: removing one leaves the others
    model = PixelSetModel(8, 8, pixels).eval()
    x = torch.from_numpy(indicator(8, 8, pixels))[None]  # 1 on S, 0 elsewhere: imputing S gives ~0
    levels = (4 / 64,)  # exactly |S| pixels
    right = road(model, x, 0, indicator(8, 8, pixels), levels=levels)
    wrong = road(model, x, 0, -indicator(8, 8, pixels), levels=levels)
    others = [road(model, x, 0, np.random.default_rng(s).random((8, 8)), levels=levels)["morf_prob"][0]
              for s in range(20)]
    assert right["morf_prob"][0] == pytest.approx(0.5, abs=0.01)  # sum over S ~ 0 + noise
    assert right["morf_prob"][0] < min(others) and right["lerf_prob"][0] == pytest.approx(sigmoid(4), abs=1e-6)
    assert right["gap"] > 0 > wrong["gap"]


def test_random_baselines_are_seeded_and_smoothness_matched():
    smooth, pixel = random_maps(32, 32, layer_hw=(7, 7)), random_maps(32, 32)
    assert smooth.shape == pixel.shape == (8, 32, 32)
    assert torch.equal(smooth, random_maps(32, 32, layer_hw=(7, 7)))
    assert torch.equal(pixel[3], torch.rand(32, 32, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(pixel[0], pixel[1])
    assert torch.equal(random_maps(32, 32, seeds=2, first_seed=3)[0], pixel[3])

    def tv(m):  # mean absolute difference between 4-neighbours
        return ((m[:, 1:] - m[:, :-1]).abs().mean() + (m[:, :, 1:] - m[:, :, :-1]).abs().mean()) / 2

    # neighbouring uniform values differ by 1/3 on average; upsampling 7 -> 32 spreads each
    # difference over ~4.6 pixels
    assert tv(pixel) == pytest.approx(1 / 3, abs=0.02)
    assert tv(smooth) < 0.4 * tv(pixel)


def test_edge_map_is_the_sobel_magnitude():
    x = torch.zeros(3, 6, 6)
    x[:, :, 3:] = 1.0  # a vertical step between columns 2 and 3 in every channel
    e = edge_map(x)
    # Sobel x kernel [-1, 0, 1] (x) [1, 2, 1]: 1 * (1 + 2 + 1) = 4 per channel beside the step
    assert e[:, 2:4].tolist() == [[12.0, 12.0]] * 6
    assert e[:, [0, 1, 4, 5]].abs().max() == 0


def scores(deletion, insertion, gap, rnd=(0.30, 0.40), spread=0.02):
    return {"deletion_auc": deletion, "insertion_auc": insertion,
            "random": {"kind": "7x7-upsampled", "deletion_auc": rnd[0], "insertion_auc": rnd[1],
                       "deletion_auc_std": spread, "insertion_auc_std": spread},
            "edge": {"deletion_auc": 0.35, "insertion_auc": 0.45},
            "road": {"morf_mean": 0.5 - gap / 2, "lerf_mean": 0.5 + gap / 2, "gap": gap}}


def test_verdict_needs_insertion_deletion_and_road():
    assert verdict(scores(0.20, 0.55, 0.2))["verdict"] == "faithful"
    assert verdict(scores(0.20, 0.55, -0.1))["verdict"] == "weak"  # ROAD disagrees
    assert verdict(scores(0.29, 0.55, 0.2))["verdict"] == "weak"  # deletion within the random spread
    assert verdict(scores(0.31, 0.41, 0.2))["verdict"] == "not better than random"
    reasons = verdict(scores(0.29, 0.44, 0.2))["reasons"]
    assert len(reasons) == 4 and "0.290 vs 0.300" in reasons[1] and "gap +0.200" in reasons[2]
    assert "edge detector" in reasons[3]  # 0.45 on insertion beats the method's 0.44


def test_entry_point_on_the_digits_demo_is_json_and_deterministic():
    from trainer.preprocess import normalize
    from trainer.rundir import load_run
    from trainer.sources import load_test_split

    run = load_run(ROOT / "checkpoints" / "digits-demo", check_predictions=False)
    meta, model = run.meta, run.load_model("cpu")
    images, labels = load_test_split(meta["dataset"], None, meta["input_size"])
    x = normalize(torch.as_tensor(images[:1]), meta["mean"], meta["std"])
    amap = edge_map(x[0]).numpy()
    target = int(labels[0])
    a = faithfulness(model, x, target, amap, layer_hw=(5, 5), seeds=2)
    b = json.loads(json.dumps(faithfulness(model, x[0], target, amap, layer_hw=(5, 5), seeds=2)))
    assert a == b
    ref = baselines(model, x, target, layer_hw=(5, 5), seeds=2)
    assert faithfulness(model, x, target, amap, reference=ref) == a
    with pytest.raises(ValueError, match="another target"):
        faithfulness(model, x, target + 1, amap, reference=ref)
    assert len(a["deletion_curve"]) == len(a["insertion_curve"]) == 33 and a["steps"] == 32
    # the map *is* the edge map (scored in another batch, hence only float-rounding equal)
    assert a["edge"]["deletion_auc"] == pytest.approx(a["deletion_auc"], abs=1e-5)
    assert len(a["road"]["morf_prob"]) == 9 and a["random"]["seeds"] == 2
    assert a["verdict"]["verdict"] in {"faithful", "weak", "not better than random"}
    assert any("ROAD" in r for r in a["verdict"]["reasons"])
    with pytest.raises(ValueError, match="eval mode"):
        faithfulness(model.train(), x, 0, amap)


def reference_gradcam(model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor):
    """Selvaraju et al.: ReLU(sum_k alpha_k A^k), alpha_k = spatial mean of d y_c / d A^k, at the layer's
    own resolution, then bilinear upsampling. Returns ``(maps (N, H, W), (h, w))``."""
    saved = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: saved.setdefault("a", o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    a = saved["a"]
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), a)
    cam = F.relu((grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    up = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return up[:, 0].detach(), tuple(a.shape[-2:])


def test_gradcam_insertion_beats_smooth_random_on_cifar10_fast(cifar_dir):
    """The first 100 test images, predicted class. Each image gets its own smoothness-matched random
    map (seed = image index), so the paired differences are independent draws and their 95 %
    t-interval is one for "Grad-CAM minus a random map at Grad-CAM's resolution"; it must lie
    above 0. 100 images and one random map each (6,600 forward passes, ~10 s on two idle cores)
    keep the test short; bench/faithfulness_latency.py --means 200 prints the 200-image figures."""
    from scipy import stats

    from trainer.preprocess import normalize
    from trainer.rundir import load_run
    from trainer.sources import load_test_split

    n = 100
    run = load_run(CIFAR_FAST, check_predictions=False)
    meta, model = run.meta, run.load_model("cpu").to(memory_format=torch.channels_last)
    images, _ = load_test_split(meta["dataset"], str(cifar_dir), meta["input_size"])
    x = normalize(torch.as_tensor(images[:n]), meta["mean"], meta["std"])
    with torch.no_grad():
        pred = model(x).argmax(1)
    cams, hw = reference_gradcam(model, meta["gradcam_layer"], x, pred)
    areas = []
    for i in range(n):
        noise = random_maps(32, 32, layer_hw=hw, seeds=1, first_seed=i)
        _, ins = deletion_insertion(model, x[i], int(pred[i]), removal_ranks(torch.cat([cams[i][None], noise])), 32)
        areas.append(auc(ins))
    diffs = np.diff(np.asarray(areas)[:, ::-1], axis=1)[:, 0]  # Grad-CAM - random
    half = stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / math.sqrt(n)
    print(f"insertion AUC Grad-CAM {np.mean(areas, 0)[0]:.3f}, smooth random {np.mean(areas, 0)[1]:.3f}: "
          f"difference {diffs.mean():+.4f} ± {half:.4f} (95 % CI, n={n})")
    assert diffs.mean() - half > 0
