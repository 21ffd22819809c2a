"""Grad-CAM for a whole test set, computed in batches and written beside the weights
as ``RUN_DIR/gradcam.npz`` (declaration and reader: :mod:`.gradcam_file`).

Only mistakes need a second backward pass for the true class, so the cost is
about one Grad-CAM per image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from trainer.artifacts import write
from trainer.rundir import load_run
from trainer.sources import load_test_split

from .explain import explain_image, gradcam_maps, to_input
from .explain_spec import Settings
from .gradcam_file import GRADCAM, precomputed_map


def _maps_in_batches(model, images: np.ndarray, targets: np.ndarray, layer: str, meta: dict,
                     batch_size: int, tick: Callable[[int], None]) -> np.ndarray:
    """Grad-CAM float16 ``(M, H, W)`` for uint8 ``images`` ``(M, C, H, W)`` and class ``targets`` ``(M,)``."""
    out = np.zeros((len(images), *images.shape[2:]), dtype=np.float16)
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        x = to_input(images[start:stop], meta)
        t = torch.as_tensor(targets[start:stop], dtype=torch.long)
        out[start:stop] = gradcam_maps(model, layer, x, t).numpy().astype(np.float16)
        tick(stop - start)
    return out


def precompute_gradcam(run_dir: Path, data_dir=None, batch_size: int = 256, *,
                       images: np.ndarray | None = None, labels: np.ndarray | None = None,
                       progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``run_dir/gradcam.npz`` (predicted- and true-class Grad-CAM at the default layer); returns its path.

    ``images`` uint8 ``(N, C, H, W)`` and ``labels`` ``(N,)`` may be passed by a caller that
    already holds the test set (the dashboard); otherwise it is loaded from ``data_dir``.
    ``progress(done, total)`` is called after every batch.
    """
    run = load_run(run_dir)  # verifies weights and predictions
    meta = run.meta
    if images is None or labels is None:
        images, labels = load_test_split(meta["dataset"], data_dir, meta["input_size"])
    labels = np.asarray(labels, dtype=np.int64)
    pred = run.predictions["logits"].argmax(1).astype(np.int64)
    if len(images) != len(pred) or len(labels) != len(pred):
        raise ValueError(f"{len(images)} images / {len(labels)} labels for {len(pred)} predictions")
    # A private copy, so it may be changed: frozen weights mean autograd builds no graph below
    # the Grad-CAM layer, and channels-last convolutions are ~25% faster on CPU for batches.
    model = run.load_model("cpu").to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    wrong = np.flatnonzero(pred != labels)
    total, done = len(pred) + len(wrong), 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    layer, batch_size = meta["gradcam_layer"], max(1, int(batch_size))
    pred_maps = _maps_in_batches(model, images, pred, layer, meta, batch_size, tick)
    true_maps = pred_maps.copy()
    if len(wrong):
        true_maps[wrong] = _maps_in_batches(model, images[wrong], labels[wrong],
                                            layer, meta, batch_size, tick)
    return write(run_dir, GRADCAM, meta, {"pred": pred_maps, "true": true_maps, "pred_index": pred, "label": labels})


def test_image_map(run, index: int, target, settings: Settings, cache=None) -> np.ndarray:
    """Map float32 ``(H, W)`` for test image ``index``: from gradcam.npz when it covers the request, else computed."""
    settings = settings.resolved(run.meta)
    if settings.method == "gradcam" and settings.layer == run.meta["gradcam_layer"] and isinstance(target, int):
        heat = precomputed_map(run, index, target)
        if heat is not None:
            return heat
    return explain_image(run, run.images[index], target, settings, cache)
