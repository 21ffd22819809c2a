"""Grad-CAM against a from-scratch reference of the published definition, on the shipped runs.

The reference follows Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks
via Gradient-based Localization" (ICCV 2017), Eq. 1-2:

    alpha_k^c = 1/Z sum_i sum_j  d y^c / d A^k_ij        (Eq. 1, global-average-pooled gradients)
    L^c       = ReLU( sum_k alpha_k^c A^k )                (Eq. 2, at the layer's own resolution)

then upsampled bilinearly to the input (Section 3, as for Guided Grad-CAM). It uses plain
torch forward/backward hooks and no Captum, and is compared with what the dashboard shows
(the registry's ``gradcam`` through :func:`xai_dashboard.explain.attribute`) and with what
``precompute`` stores (:func:`xai_dashboard.explain.gradcam_maps`) on 100 test images of each
shipped run: Pearson correlation >= 0.99 for every image.
"""
from __future__ import annotations

import json
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import CHECKPOINTS
from trainer.rundir import load_run
from trainer.sources import load_test_split
from xai_dashboard import explain
from xai_dashboard.explain_spec import Settings

N_IMAGES = 100


def reference_gradcam(model: torch.nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Eq. 1-2 for ``x`` ``(N, C, H, W)`` and classes ``target`` ``(N,)`` -> ``(N, H, W)`` float64."""
    module = model.get_submodule(layer)
    saved = {}
    fh = module.register_forward_hook(lambda m, i, o: saved.__setitem__("A", o.detach()))
    bh = module.register_full_backward_hook(lambda m, gi, go: saved.__setitem__("dA", go[0].detach()))
    try:
        xx = x.detach().clone().requires_grad_(True)  # a full backward hook needs a graph to the module's input
        y = model(xx)
        # images are independent in eval mode, so one backward of the summed scores gives each its own gradient
        y.gather(1, target.view(-1, 1)).sum().backward()
    finally:
        fh.remove()
        bh.remove()
    model.zero_grad(set_to_none=True)
    A, dA = saved["A"].double(), saved["dA"].double()            # (N, K, h, w)
    alpha = dA.mean(dim=(2, 3), keepdim=True)                    # Eq. 1
    cam = F.relu((alpha * A).sum(1, keepdim=True))               # Eq. 2, (N, 1, h, w)
    up = F.interpolate(cam, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)
    return up[:, 0].numpy()


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two maps; two constant maps (all zero: no positive evidence) count as equal."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a / max(a.max(), 1e-12), b / max(b.max(), 1e-12), atol=1e-3) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _check_run(run_dir, data_dir) -> tuple[float, float]:
    run = load_run(run_dir)
    meta = run.meta
    images, _labels = load_test_split(meta["dataset"], data_dir, meta["input_size"])
    model = run.load_model("cpu")
    x = explain.to_input(images[:N_IMAGES], meta)
    target = torch.as_tensor(run.predictions["logits"][:N_IMAGES].argmax(1), dtype=torch.long)
    want = reference_gradcam(model, meta["gradcam_layer"], x, target)
    shown = explain.attribute(model, x, target, Settings().resolved(meta))          # live and API path
    stored = explain.gradcam_maps(model, meta["gradcam_layer"], x, target).numpy()  # precompute path
    assert explain.hook_count(model) == 0
    r = np.array([[pearson(got[i], want[i]) for i in range(N_IMAGES)] for got in (shown, stored)])
    print(f"{run_dir.name}: Pearson min {r.min():.5f}, median {np.median(r):.5f}")
    assert (r >= 0.99).all(), f"{run_dir.name}: images below 0.99: {np.flatnonzero((r < 0.99).any(0))}, r={r.min()}"
    return float(r.min()), float(np.median(r))


def test_digits_demo_matches_reference():
    _check_run(CHECKPOINTS / "digits-demo", None)  # sklearn's digits: no external data


# every shipped CIFAR-10 run, found the way the dashboard finds runs (a new shipped run is covered unasked)
SHIPPED_CIFAR = sorted(d.name for d in CHECKPOINTS.iterdir() if (d / "meta.json").is_file()
                       and json.loads((d / "meta.json").read_text())["dataset"]["name"] == "cifar10")


def test_every_shipped_cifar10_run_is_checked():
    assert {"cifar10-fast", "cifar10-simple_cnn"} <= set(SHIPPED_CIFAR)


@pytest.mark.parametrize("name", SHIPPED_CIFAR)
def test_cifar10_runs_match_reference(name, cifar_dir):
    _check_run(CHECKPOINTS / name, cifar_dir)

