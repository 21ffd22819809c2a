"""The stress test of a run: its predictions on every corruption x severity of its test images
(:mod:`.corruptions`), written as ``RUN_DIR/stress.npz`` (layout and reading: :mod:`.stress_file`).

The whole test set by default, or ``images`` of it stratified by class (:func:`.sanity.stratified_indices`).
Each batch of test images is corrupted (image ``i`` with the generator of its test index, so any batch
size gives the same images) and run through the model without gradients, channels-last, under bfloat16
autocast where the CPU has native bf16 (as :func:`trainer.runtime.pick_dtype` decides; the clean images
are evaluated the same way, so clean and corrupted accuracies are comparable). The file is rewritten
after the clean pass and after each corruption; a later call with the same settings continues after
the last corruption stored.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from trainer.artifacts import ArtifactError, write
from trainer.rundir import load_run
from trainer.runtime import autocast, pick_dtype
from trainer.sources import load_test_split

from .corruptions import CORRUPTIONS
from .explain import to_input
from .sanity import private_model, stratified_indices
from .stress_file import SEVERITIES, STRESS, corrupted_test_images, load_stress


def sample(labels: np.ndarray, images: int | None, seed: int) -> np.ndarray:
    """Sorted test indices: all of them, or ``images`` stratified by class."""
    if images is None or images >= len(labels):
        return np.arange(len(labels))
    if images < 1:
        raise ValueError(f"--images must be at least 1, got {images}")
    return stratified_indices(labels, images, seed)


@torch.inference_mode()
def evaluate(model, images: np.ndarray, labels: np.ndarray, meta: dict, dtype) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``(M, C, H, W)`` -> (predicted class int64 ``(M,)``, probability of ``labels`` float32 ``(M,)``)."""
    with autocast(torch.device("cpu"), dtype):
        logits = model(to_input(images, meta))
    probs = torch.softmax(logits.float(), 1)
    return probs.argmax(1).numpy(), probs[torch.arange(len(labels)), torch.as_tensor(labels)].numpy()


def _resumed(run_dir: Path, meta: dict, config: dict, index: np.ndarray) -> dict | None:
    """The arrays of a stress.npz for the same settings and images (finished or not), else None."""
    try:
        old, _ = load_stress(run_dir, meta)
    except ArtifactError:
        return None
    if old is None or old["config"] != config or not np.array_equal(old["index"], index):
        return None
    return old


def precompute_stress(run_dir, data_dir=None, *, images: int | None = None, batch_size: int = 500, seed: int = 0,
                      progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``run_dir/stress.npz`` (every corruption of :data:`.corruptions.CORRUPTIONS` at every severity);
    returns its path. ``progress(done, total)`` counts image evaluations (clean and corrupted)."""
    run_dir, batch_size = Path(run_dir), max(1, int(batch_size))
    run = load_run(run_dir)
    meta = run.meta
    test_x, labels = load_test_split(meta["dataset"], data_dir, meta["input_size"])
    index = sample(np.asarray(labels, dtype=np.int64), images, seed)
    x, y = np.asarray(test_x[index]), np.asarray(labels, dtype=np.int64)[index]
    dtype = pick_dtype("auto", torch.device("cpu"))
    names = list(CORRUPTIONS)
    config = {"seed": seed, "images": len(index), "corruptions": names, "severities": list(SEVERITIES),
              "precision": str(dtype).removeprefix("torch.") if dtype else "float32",
              "channels": "rgb" if meta["in_channels"] == 3 else "grey: corrupted as RGB, back by ITU-R 601 luma"}
    model = private_model(run.load_model("cpu"))
    steps = len(index) * (1 + len(names) * len(SEVERITIES))
    done = [0]

    def run_all(images_of: Callable[[int, int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and true-class probabilities ``(n,)`` of ``images_of(lo, hi)``, batch by batch."""
        pred, prob = np.empty(len(index), np.int64), np.empty(len(index), np.float32)
        for lo in range(0, len(index), batch_size):
            hi = min(lo + batch_size, len(index))
            pred[lo:hi], prob[lo:hi] = evaluate(model, images_of(lo, hi), y[lo:hi], meta, dtype)
            done[0] += hi - lo
            if progress is not None:
                progress(done[0], steps)
        return pred, prob

    arrays = _resumed(run_dir, meta, config, index)
    if arrays is None:
        clean_pred, clean_prob = run_all(lambda lo, hi: x[lo:hi])
        none = np.zeros((0, len(SEVERITIES), len(index)))
        arrays = {"index": index, "label": y, "clean_pred": clean_pred, "clean_prob": clean_prob,
                  "pred": none, "prob": none}
        _write(run_dir, meta, config, arrays)
    done[0] = len(index) * (1 + len(arrays["pred"]) * len(SEVERITIES))
    for name in names[len(arrays["pred"]):]:
        results = [run_all(lambda lo, hi: corrupted_test_images(x[lo:hi], index[lo:hi], name, severity, seed))
                   for severity in SEVERITIES]
        arrays["pred"] = np.concatenate([arrays["pred"], np.stack([p for p, _ in results])[None]])
        arrays["prob"] = np.concatenate([arrays["prob"], np.stack([q for _, q in results])[None]])
        _write(run_dir, meta, config, arrays)
    return run_dir / STRESS.name


def _write(run_dir: Path, meta: dict, config: dict, arrays: dict) -> Path:
    pred_type = np.uint8 if meta["num_classes"] <= 256 else np.int16
    out = {"config": np.array(json.dumps(config)), "index": arrays["index"].astype(np.int64),
           "label": arrays["label"].astype(np.int64)}
    for key in ("clean_pred", "pred"):
        out[key] = arrays[key].astype(pred_type)
    for key in ("clean_prob", "prob"):
        out[key] = arrays[key].astype(np.float16)
    return write(run_dir, STRESS, meta, out)
