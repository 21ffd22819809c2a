"""The faithfulness scoreboard: every applicable attribution method on a stratified sample of test
images, scored by deletion and insertion AUC (:mod:`.faithfulness`) against random and edge maps,
written as ``RUN_DIR/scoreboard.npz`` (layout and statistics: :mod:`.scoreboard_file`).

Per image: the maps of every method (registry defaults, Grad-CAM at the run's ``gradcam_layer``,
target = the trained model's prediction), then one batch of curves for the random maps of each
smoothness (seeds ``0 ... seeds - 1``), the Sobel edge map and every method's map: the baselines
are computed once per image and shared by every method. Curves use ``steps`` = the image side,
deleted pixels take the dataset's mean colour (0 after normalisation), as on the card, and the
perturbed images go through the model under bf16 autocast where the device has native bf16, as on
the card (:func:`trainer.runtime.pick_dtype`; ``config["precision"]`` records it): about half the
time of fp32 on this project's CPU. ``device`` runs the maps and the curves (a GPU, when there is one,
by default); the perturbed images are built on the CPU, a chunk at a time.

Images are scored in the round-robin order of :func:`scoring_order` and the file is rewritten after
every ``batch_size`` images with the images done so far; a later call with the same settings keeps
every stored image of its sample and scores only the rest (asking for fewer images than were done
keeps a balanced subset: the order for fewer images is a prefix of the order for more).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from trainer.artifacts import ArtifactError, write
from trainer.rundir import load_run
from trainer.runtime import pick_device, pick_dtype
from trainer.sources import load_test_split

from . import faithfulness as F
from .explain import to_input
from .map_faithfulness import layer_hw
from .sanity import MAP_BATCH, all_maps, applicable_methods, private_model
from .scoreboard_file import MEASURES, SCOREBOARD, load_scoreboard


def scoring_order(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The ``n`` test images of :func:`.sanity.stratified_indices` (the same set), in the order drawn:
    round-robin over the classes' shuffled images, so every prefix is as balanced as the classes allow
    and the order for ``n`` images is a prefix of the order for more."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    order = [p[r] for r in range(max(map(len, per_class))) for p in per_class if r < len(p)]
    return np.asarray(order[:n], dtype=np.int64)


def image_scores(model, x: torch.Tensor, target: int, maps: dict[str, np.ndarray], randoms: dict[str, torch.Tensor],
                 steps: int, bf16: bool) -> dict[str, dict[str, float]]:
    """``{method or baseline: {"deletion", "insertion"}}`` AUCs of one normalised CPU image ``x`` ``(C, H, W)``:
    ``maps`` ``{method: (H, W)}``, ``randoms`` ``{baseline: (seeds, H, W)}`` (their AUCs are averaged)."""
    stack = [*randoms.values(), F.edge_map(x)[None], *(torch.as_tensor(m)[None] for m in maps.values())]
    dele, ins = F.deletion_insertion(model, x, target, F.removal_ranks(torch.cat(stack)), steps, bf16=bf16)
    d, i = np.atleast_1d(F.auc(dele)), np.atleast_1d(F.auc(ins))
    out, at = {}, 0
    for name, count in [*((k, len(v)) for k, v in randoms.items()), ("edge", 1), *((m, 1) for m in maps)]:
        out[name] = {"deletion": float(d[at:at + count].mean()), "insertion": float(i[at:at + count].mean())}
        at += count
    return out


def _resumed(run_dir: Path, meta: dict, config: dict, sample: np.ndarray) -> dict[str, list]:
    """The per-image columns of a current scoreboard.npz computed with ``config``, for the images it
    shares with ``sample`` (a file for more images, or an unfinished one, gives what it has); else {}."""
    try:
        old, _ = load_scoreboard(run_dir, meta)
    except ArtifactError:
        old = None
    if old is None or old["config"] != config:
        return {}
    keep = np.isin(old["index"], sample)
    return {k: list(v[keep]) for k, v in old.items() if k not in ("config", "order")}


def precompute_scoreboard(run_dir, data_dir=None, *, images: int = 1000, batch_size: int = 20, seed: int = 0,
                          device: str = "auto", progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``run_dir/scoreboard.npz`` for ``images`` stratified test images; returns its path.

    Rewritten after every ``batch_size`` images, so a killed job loses at most one batch;
    ``progress(done, total)`` counts images.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    meta = run.meta
    test_x, labels = load_test_split(meta["dataset"], data_dir, meta["input_size"])
    labels = np.asarray(labels, dtype=np.int64)
    sample = scoring_order(labels, images, seed)
    preds = run.predictions["logits"].argmax(1).astype(np.int64)
    dev = pick_device(device)
    bf16 = pick_dtype("auto", dev) is torch.bfloat16
    model = private_model(run.load_model(str(dev)))
    settings, skipped = applicable_methods(model, to_input(test_x[:1], meta), meta)
    smooth = {s.method: layer_hw(s, meta) for s in settings}
    steps = F.default_steps(*test_x.shape[-2:])
    config = {"seed": seed, "steps": steps, "seeds": F.SEEDS, "methods": [s.method for s in settings],
              "skipped": skipped, "target": "the trained model's predicted class", "fill": "dataset mean colour",
              "baseline_of": {m: "random_layer" if hw else "random_pixel" for m, hw in smooth.items()},
              "layer_hw": next((list(hw) for hw in smooth.values() if hw), None), "precision": "bf16" if bf16 else "fp32"}
    h, w = test_x.shape[-2:]
    randoms = {"random_pixel": F.random_maps(h, w)}
    if config["layer_hw"]:
        randoms["random_layer"] = F.random_maps(h, w, layer_hw=tuple(config["layer_hw"]))
    names = [*config["methods"], *randoms, "edge"]
    columns = {k: [] for k in ("index", "label", "target", *(f"{n}.{m}" for n in names for m in MEASURES))}
    columns |= _resumed(run_dir, meta, config, sample)
    todo = sample[~np.isin(sample, columns["index"])]
    order = np.concatenate([np.asarray(columns["index"], dtype=np.int64), todo])  # done first, then the rest
    for lo in range(len(order) - len(todo), len(order), max(1, batch_size)):
        idx = order[lo:lo + max(1, batch_size)]
        x = to_input(test_x[idx], meta)
        maps = all_maps(model, x.to(dev), torch.as_tensor(preds[idx], device=dev), settings, MAP_BATCH,
                        lambda n: None)
        for j, i in enumerate(idx):
            scores = image_scores(model, x[j], int(preds[i]), {m: v[j] for m, v in maps.items()}, randoms, steps,
                                  bf16)
            for key, value in (("index", i), ("label", labels[i]), ("target", preds[i])):
                columns[key].append(int(value))
            for name, auc in scores.items():
                for m in MEASURES:
                    columns[f"{name}.{m}"].append(auc[m])
            if progress is not None:
                progress(lo + j + 1, len(order))
        _write(run_dir, meta, config, order, columns)
    return _write(run_dir, meta, config, order, columns)


def _write(run_dir: Path, meta: dict, config: dict, order: np.ndarray, columns: dict[str, list]) -> Path:
    arrays = {k: np.asarray(v, dtype=np.int64 if k in ("index", "label", "target") else np.float64)
              for k, v in columns.items()}
    return write(run_dir, SCOREBOARD, meta, {"config": np.array(json.dumps(config)), "order": order, **arrays})
