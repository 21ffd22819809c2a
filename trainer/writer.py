"""Final evaluation and the writing of a complete run directory."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from trainer import rundir
from trainer.data import Dataset
from trainer.evaluate import accuracy, predict, predict_tta
from trainer.models import layer_shapes
from trainer.runtime import provenance


def forward_gflops(model, in_channels: int, size: int) -> float | None:
    """GFLOP of one forward pass (2 x multiply-accumulates), counted by torch's FLOP counter."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        p = next(model.parameters())
        x = torch.zeros(1, in_channels, size, size, device=p.device)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model.eval()(x)
        return fc.get_total_flops() / 1e9
    except Exception:  # FLOP counting is informative only
        return None


def write_predictions_for(run_dir: Path, model, images: torch.Tensor, labels: torch.Tensor, meta: dict,
                          device: torch.device, tta_dtype=None, tta: bool = False) -> dict:
    """Compute fp32 predictions (and TTA accuracy) for the test split and write predictions.npz."""
    t0 = time.perf_counter()
    # fp32 (reproducible by `xai-train predict`); channels-last like the trained model, no layout round trips.
    logits, embeds = predict(model, images, meta["mean"], meta["std"], device=device, batch_size=1000,
                             channels_last=True)
    seconds = time.perf_counter() - t0
    result = {"test_accuracy": accuracy(logits, labels), "predict_seconds": seconds,
              "inference_images_per_s": len(images) / seconds}
    if tta:
        tta_logits = predict_tta(model, images, meta["mean"], meta["std"], device=device, dtype=tta_dtype,
                                 batch_size=1000, channels_last=True, plain=logits)
        result["test_accuracy_tta"] = accuracy(tta_logits, labels)
    rundir.write_predictions(run_dir, index=np.arange(len(labels)), label=labels.numpy(), logits=logits,
                             embedding=embeds, weights_sha256=meta["weights_sha256"])
    return result


def finish_run(out: Path, cfg, model, arch_kwargs: dict, ds: Dataset, mean, std, state, device, dtype,
               t_start: float) -> dict:
    """Write weights, predictions, history and meta.json (last, so its presence means complete)."""
    model.eval()
    sha = rundir.write_weights(out, model.state_dict())
    dataset = {**ds.describe(), "spec": cfg.dataset, "test_subset": cfg.test_subset, "train_subset": cfg.train_subset}
    meta = {
        "schema_version": rundir.SCHEMA_VERSION, "arch": cfg.model, "arch_kwargs": arch_kwargs,
        "num_classes": len(ds.classes), "in_channels": ds.in_channels, "class_names": list(ds.classes),
        "input_size": ds.input_size, "mean": mean, "std": std, "dataset": dataset,
        "gradcam_layer": model.gradcam_layer,
        "layers": [{"name": n, "shape": list(s)} for n, s in layer_shapes(model, ds.in_channels, ds.input_size)],
        "seed": cfg.seed, "weights_sha256": sha,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "gflops_per_image": forward_gflops(model, ds.in_channels, ds.input_size),
    }
    result = write_predictions_for(out, model, ds.test_x, ds.test_y, meta, device, dtype, cfg.tta)
    history = state.history
    images = sum(h.get("images_per_s", 0) * h.get("seconds", 0) for h in history)
    meta.update(
        test_accuracy=result["test_accuracy"], test_accuracy_tta=result.get("test_accuracy_tta"),
        epochs_completed=state.epoch, best_epoch=state.best_epoch if cfg.patience else None,
        timings={
            "train_seconds": state.train_seconds, "wall_seconds": time.perf_counter() - t_start,
            "train_images_per_s": images / state.train_seconds if state.train_seconds else None,
            "inference_images_per_s": result["inference_images_per_s"],
        },
        config=cfg.to_dict(), provenance=state.provenance or provenance(device, dtype),
    )
    rundir.write_json(out / rundir.HISTORY, history)
    rundir.write_json(out / rundir.META, meta)
    tta = f", with TTA {meta['test_accuracy_tta']:.4f}" if cfg.tta else ""
    print(f"test accuracy {meta['test_accuracy']:.4f}{tta}; wall {meta['timings']['wall_seconds']:.1f}s; wrote {out}", flush=True)
    return meta
