"""``xai-train predict``: recompute ``predictions.npz`` for an existing checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch

from trainer import rundir
from trainer.runtime import pick_device
from trainer.sources import load_test_split
from trainer.writer import write_predictions_for


def repredict(run_dir: Path, data_dir: str | None = None, device: str = "auto") -> dict:
    """Rebuild the model from its verified weights, predict the test split, update meta.json."""
    run = rundir.load_run(run_dir, check_predictions=False)
    dev = pick_device(device)
    model = run.load_model(device=str(dev))
    x, y = load_test_split(run.meta["dataset"], data_dir, run.meta["input_size"])
    result = write_predictions_for(Path(run_dir), model, torch.from_numpy(x), torch.from_numpy(y), run.meta, dev)
    meta = {**run.meta, "test_accuracy": result["test_accuracy"]}
    meta.setdefault("timings", {})["inference_images_per_s"] = result["inference_images_per_s"]
    rundir.write_json(Path(run_dir) / rundir.META, meta)
    return meta
