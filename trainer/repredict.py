"""``xai-train predict``: recompute ``predictions.npz`` for an existing checkpoint.

Under ``torchrun --nproc_per_node W -m trainer.cli predict RUN`` every process predicts a
contiguous shard of the test set (:mod:`trainer.distributed`: one GPU each, or gloo on
the CPU) and rank 0 gathers the shards and writes the run directory.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from trainer import rundir
from trainer.distributed import map_shards, session
from trainer.evaluate import accuracy, predict
from trainer.sources import load_test_split


def repredict(run_dir: Path, data_dir: str | None = None, device: str = "auto") -> dict | None:
    """Rebuild the model from its verified weights, predict the test split, update meta.json.

    Returns the new meta on rank 0 (the only process that writes), None on other ranks.
    """
    with session(device) as (ctx, dev):
        run = rundir.load_run(run_dir, check_predictions=False)
        model = run.load_model(device=str(dev))
        x, y = load_test_split(run.meta["dataset"], data_dir, run.meta["input_size"])
        images, mean, std = torch.from_numpy(x), run.meta["mean"], run.meta["std"]

        def shard(start: int, stop: int) -> dict[str, np.ndarray]:
            """logits float32 ``(stop - start, K)`` and embedding float32 ``(stop - start, D)``."""
            logits, embeds = predict(model, images[start:stop], mean, std, device=dev)
            return {"logits": logits, "embedding": embeds}

        t0 = time.perf_counter()
        out = map_shards(len(y), shard, ctx)
        seconds = time.perf_counter() - t0
        if not ctx.is_main:
            return None
        rundir.write_predictions(Path(run_dir), index=np.arange(len(y)), label=y, logits=out["logits"],
                                 embedding=out["embedding"], weights_sha256=run.meta["weights_sha256"])
        meta = {**run.meta, "test_accuracy": accuracy(out["logits"], y)}
        meta.setdefault("timings", {})["inference_images_per_s"] = len(y) / seconds
        rundir.write_json(Path(run_dir) / rundir.META, meta)
        return meta
