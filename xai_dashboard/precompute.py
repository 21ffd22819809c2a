"""Grad-CAM for a whole test set, computed in batches and written beside the weights
as ``RUN_DIR/gradcam.npz`` (declaration and reader: :mod:`.gradcam_file`).

Only mistakes need a second backward pass for the true class, so the cost is
about one Grad-CAM per image. Under ``torchrun --nproc_per_node W -m xai_dashboard.cli
precompute gradcam RUN`` the list of maps (every image's predicted class, then every
mistake's true class) is split into W contiguous shards (:mod:`trainer.distributed`: one
GPU per process, or gloo on the CPU) and rank 0 gathers them and writes the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from trainer.artifacts import write
from trainer.distributed import map_shards, session
from trainer.rundir import load_run
from trainer.sources import load_test_split

from .explain import explain_image, gradcam_maps, to_input
from .explain_spec import Settings
from .gradcam_file import GRADCAM, precomputed_map


def _maps_in_batches(model, images: np.ndarray, index: np.ndarray, targets: np.ndarray, layer: str, meta: dict,
                     batch_size: int, device: torch.device, tick: Callable[[int], None]) -> np.ndarray:
    """Grad-CAM float16 ``(M, H, W)`` of uint8 ``images[index]`` (``images`` ``(N, C, H, W)``, ``index``
    ``(M,)``) for class ``targets`` ``(M,)``."""
    out = np.zeros((len(index), *images.shape[2:]), dtype=np.float16)
    for start in range(0, len(index), batch_size):
        stop = min(start + batch_size, len(index))
        x = to_input(images[index[start:stop]], meta).to(device)
        t = torch.as_tensor(targets[start:stop], dtype=torch.long, device=device)
        out[start:stop] = gradcam_maps(model, layer, x, t).cpu().numpy().astype(np.float16)
        tick(stop - start)
    return out


def _frozen_model(run, device: torch.device):
    """A private copy, so it may be changed: frozen weights mean autograd builds no graph below
    the Grad-CAM layer, and channels-last convolutions are ~25% faster on CPU for batches."""
    model = run.load_model(str(device)).to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def precompute_gradcam(run_dir: Path, data_dir=None, batch_size: int = 256, *,
                       images: np.ndarray | None = None, labels: np.ndarray | None = None,
                       progress: Callable[[int, int], None] | None = None, device: str = "cpu") -> Path | None:
    """Write ``run_dir/gradcam.npz`` (predicted- and true-class Grad-CAM at the default layer); returns its path
    (None on torchrun ranks other than 0, which compute their shard and write nothing).

    ``images`` uint8 ``(N, C, H, W)`` and ``labels`` ``(N,)`` may be passed by a caller that
    already holds the test set (the dashboard); otherwise it is loaded from ``data_dir``.
    ``progress(done, total)`` is called after every batch (for this process's shard).
    """
    with session(device) as (ctx, dev):
        run = load_run(run_dir)  # verifies weights and predictions
        meta = run.meta
        if images is None or labels is None:
            images, labels = load_test_split(meta["dataset"], data_dir, meta["input_size"])
        labels = np.asarray(labels, dtype=np.int64)
        pred = run.predictions["logits"].argmax(1).astype(np.int64)
        if len(images) != len(pred) or len(labels) != len(pred):
            raise ValueError(f"{len(images)} images / {len(labels)} labels for {len(pred)} predictions")
        model = _frozen_model(run, dev)
        wrong = np.flatnonzero(pred != labels)
        # The work list: every image for its predicted class, then every mistake for its true class.
        index = np.concatenate([np.arange(len(pred)), wrong])
        targets = np.concatenate([pred, labels[wrong]])
        layer, batch_size = meta["gradcam_layer"], max(1, int(batch_size))

        def shard(start: int, stop: int) -> dict[str, np.ndarray]:
            """maps float16 ``(stop - start, H, W)`` for work items ``[start, stop)``."""
            done = 0

            def tick(n: int) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress(done, stop - start)

            return {"maps": _maps_in_batches(model, images, index[start:stop], targets[start:stop], layer, meta,
                                             batch_size, dev, tick)}

        out = map_shards(len(index), shard, ctx)
        if not ctx.is_main:
            return None
        pred_maps = out["maps"][:len(pred)]
        true_maps = pred_maps.copy()
        true_maps[wrong] = out["maps"][len(pred):]
        del out
        return write(run_dir, GRADCAM, meta, {"pred": pred_maps, "true": true_maps, "pred_index": pred,
                                              "label": labels})


def test_image_map(run, index: int, target, settings: Settings, cache=None, signed: bool = False) -> np.ndarray:
    """Map float32 ``(H, W)`` for test image ``index`` (``signed``: see :func:`.explain.attribute`): from
    gradcam.npz when it covers the request, else computed."""
    settings = settings.resolved(run.meta)
    if settings.method == "gradcam" and settings.layer == run.meta["gradcam_layer"] and isinstance(target, int) \
            and not signed:
        heat = precomputed_map(run, index, target)
        if heat is not None:
            return heat
    return explain_image(run, run.images[index], target, settings, cache, signed)
