"""Sanity checks for attribution maps (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

* **Cascading model randomisation**: the model's parameterised blocks are re-initialised one
  at a time from the head (logits) down to the input; after each step every registered
  method's maps (:func:`.explain.attribute`, default settings, the run's ``gradcam_layer``)
  are recomputed on ``N`` test images and compared with the trained model's maps.
* **Data randomisation** (small datasets only, :data:`RETRAINABLE`): a copy of the model
  trained on permuted training labels is compared the same way.

**Blocks**: every module that holds parameters directly (a conv, a linear, a norm) belongs to
the block of its parent module, except a module whose parent is the model itself, which is
its own block; a block nested inside another block joins it. Blocks are ordered by first
appearance in ``named_modules()`` (input to head). LeNet-5: ``features.block1``,
``features.block2``, ``classifier.fc1``, ``classifier.fc2``, ``head``. Each module is
re-initialised by its own ``reset_parameters()`` (norm layers also reset their running
statistics) under ``torch.manual_seed(seed + block position)``, so a resumed run rebuilds the
same random weights. Parameters registered on the model object itself are left alone (no
model of the zoo has any).

**Similarity**, per image, then the mean and its 95 % t-interval over the images:
Spearman's rank correlation of the two maps' pixels (the dashboard's maps are already
non-negative, |attribution| or its positive part, so this is the rank correlation of
absolute values; a constant map has no ranking and counts as 0) and SSIM
(:func:`ssim`). Every step keeps the target fixed: the trained model's predicted class.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from trainer.artifacts import ArtifactError, read, write
from trainer.rundir import load_run
from trainer.runtime import pick_device
from trainer.sources import load_test_split

from .explain import attribute, to_input, unavailable_reason
from .explain_spec import Settings
from .methods import METHODS
from .sanity_file import SANITY

RETRAINABLE = {"digits"}  # datasets whose model retrains on permuted labels in seconds
PERMUTED_EPOCHS = 60      # enough for LeNet-5 to fit permuted digits labels (Adebayo et al.: > 95 % train accuracy)
K1, K2, SIGMA, RADIUS = 0.01, 0.03, 1.5, 5  # Wang et al. (2004): 11 x 11 Gaussian window, sigma 1.5
# Images per attribution call. Captum's Occlusion forwards (images x perturbations per eval) at once:
# 8 x 32 = 256 keeps that batch where the CPU is fast; at 48 images (1,536 at once) every method's maps
# of cifar10-fast took 307 instead of 279 ms of CPU per image (one thread). IG batches on its own.
MAP_BATCH = 8


# ------------------------------------------------------------------ similarity

def ssim(a, b, data_range: float = 1.0) -> np.ndarray:
    """Mean SSIM float64 ``(N,)`` of maps ``a``, ``b`` ``(N, H, W)`` (H, W >= 11), Wang et al. (2004).

    Local weighted means, variances and covariance under an 11 x 11 Gaussian window (sigma 1.5,
    weights summing to 1, population moments), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``; the SSIM
    map over the windows that fit inside the image ("valid", like the authors' ``ssim_index.m``),
    then its mean. ``L`` = ``data_range``: 1 for the dashboard's maps, which lie in [0, 1].
    """
    x = torch.as_tensor(np.asarray(a), dtype=torch.float64).unsqueeze(1)
    y = torch.as_tensor(np.asarray(b), dtype=torch.float64).unsqueeze(1)
    g = torch.exp(-torch.arange(-RADIUS, RADIUS + 1, dtype=torch.float64) ** 2 / (2 * SIGMA ** 2))
    w = torch.outer(g, g) / torch.outer(g, g).sum()
    mean = lambda t: F.conv2d(t, w[None, None])  # noqa: E731 - (N, 1, H-10, W-10)
    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx ** 2, mean(y * y) - my ** 2, mean(x * y) - mx * my
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).numpy()


def spearman(a, b) -> np.ndarray:
    """Spearman's rho float64 ``(N,)`` between the pixels of maps ``a``, ``b`` ``(N, H, W)``;
    NaN where a map is constant (it has no ranking)."""
    a, b = np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1)
    rho = np.full(len(a), np.nan)
    for i in range(len(a)):
        if np.ptp(a[i]) > 0 and np.ptp(b[i]) > 0:
            rho[i] = stats.spearmanr(a[i], b[i]).statistic
    return rho


def summary(values: np.ndarray) -> dict:
    """``{"mean", "ci95": [lo, hi], "n"}``: the mean and its two-sided 95 % Student-t interval."""
    v = np.asarray(values, dtype=np.float64)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "ci95": [float(v.mean() - half), float(v.mean() + half)], "n": int(len(v))}


def compare(original: dict[str, np.ndarray], maps: dict[str, np.ndarray]) -> dict[str, dict]:
    """``{method: {"spearman": summary, "ssim": summary, "constant_maps": count}}`` of ``maps`` against
    ``original`` (each ``(N, H, W)``); a pair with a constant map counts as rank correlation 0."""
    out = {}
    for m in maps:
        rho = spearman(original[m], maps[m])
        out[m] = {"spearman": summary(np.nan_to_num(rho)), "ssim": summary(ssim(original[m], maps[m])),
                  "constant_maps": int(np.isnan(rho).sum())}
    return out


# ------------------------------------------------------------------ blocks and randomisation

def parameterised_blocks(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """``[(block name, modules holding parameters directly)]`` from input to head (rule: module docstring)."""
    owners = [(n, m) for n, m in model.named_modules() if n and next(m.parameters(recurse=False), None) is not None]
    blocks: dict[str, list[nn.Module]] = {}
    for name, module in owners:
        blocks.setdefault(name.rpartition(".")[0] or name, []).append(module)
    merged: dict[str, list[nn.Module]] = {}
    for name, modules in blocks.items():
        outer = min((b for b in blocks if name.startswith(b + ".")), key=len, default=name)  # the outermost
        merged.setdefault(outer, []).extend(modules)
    return list(merged.items())


def randomise(modules: list[nn.Module], seed: int) -> None:
    """Re-initialise ``modules`` in place by their own ``reset_parameters()`` under ``seed`` (global RNG kept).

    The draws come from the CPU generator whatever device the modules are on, so a cascade started on
    a GPU and resumed on a CPU (or the other way round) rebuilds the same random weights.
    """
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.random.default_generator.manual_seed(seed)  # what torch.manual_seed does to the CPU; CUDA's untouched
        for m in modules:
            if not hasattr(m, "reset_parameters"):
                raise ValueError(f"{type(m).__name__} holds parameters but has no reset_parameters()")
            device = next(m.parameters(recurse=False)).device
            m.to("cpu").reset_parameters()
            m.to(device)


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` sorted test indices, ``n / K`` per class (the first classes take one more when it does not divide)."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    # round-robin over the classes, so any prefix is as balanced as the classes allow
    order = [p[r] for r in range(max(map(len, per_class))) for p in per_class if r < len(p)]
    return np.sort(np.asarray(order[:n], dtype=np.int64))


def private_model(model: nn.Module) -> nn.Module:
    """``model`` in eval mode, channels-last (~25 % faster CPU convolutions), weights frozen so that
    autograd computes input gradients only (the methods need no weight gradients)."""
    model = model.eval().to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ------------------------------------------------------------------ maps

def applicable_methods(model: nn.Module, x: torch.Tensor, meta: dict) -> tuple[list[Settings], dict[str, str]]:
    """Resolved default settings of every registered method the model supports, and ``{method: why not}``."""
    settings, skipped = [], {}
    for name in METHODS:
        reason = unavailable_reason(model, x[:1], name)
        if reason:
            skipped[name] = reason
        else:
            settings.append(Settings(name).resolved(meta))
    return settings, skipped


def all_maps(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, settings: list[Settings], batch_size: int,
             tick: Callable[[int], None]) -> dict[str, np.ndarray]:
    """``{method: maps float32 (N, H, W) in [0, 1]}`` for normalised ``x`` ``(N, C, H, W)`` and
    classes ``targets`` ``(N,)``, in batches of ``batch_size``; ``tick(images)`` after each."""
    out = {}
    with warnings.catch_warnings():
        # Captum's notices that a batch exceeds IG's internal batch size and that guided backprop hooks
        # ReLUs: expected here, and one per batch would bury the progress bar
        warnings.filterwarnings("ignore", "Internal batch size cannot be less", UserWarning)
        warnings.filterwarnings("ignore", "Setting backward hooks on ReLU", UserWarning)
        for s in settings:
            parts = []
            for start in range(0, len(x), batch_size):
                stop = min(start + batch_size, len(x))
                parts.append(attribute(model, x[start:stop], targets[start:stop], s))
                tick(stop - start)
            out[s.method] = np.concatenate(parts)
    return out


# ------------------------------------------------------------------ data randomisation

def train_permuted(meta: dict, seed: int) -> tuple[nn.Module, dict]:
    """The run's architecture trained on its training images with randomly permuted labels.

    A plain loop (no augmentation, which would only slow memorising): Adam with the run's
    learning rate, weight decay and batch size, cosine decay over :data:`PERMUTED_EPOCHS`
    epochs, the run's normalisation. Returns ``(model in eval mode, {"epochs", "train_accuracy",
    "test_accuracy"})``: accuracy on the permuted training labels and on the true test labels.
    """
    from trainer.models import create_model
    from trainer.preprocess import normalize
    from trainer.sources import read_dataset

    cfg = meta.get("config", {})
    lr, wd, bs = cfg.get("lr", 2e-3), cfg.get("weight_decay", 1e-4), cfg.get("batch_size", 64)
    ds = read_dataset(meta["dataset"].get("spec", meta["dataset"]["name"]), input_size=meta["input_size"])
    x = normalize(torch.as_tensor(ds.train_x), meta["mean"], meta["std"])
    y = torch.as_tensor(np.random.default_rng(seed).permutation(ds.train_y))
    torch.manual_seed(seed)
    model = create_model(meta["arch"], num_classes=meta["num_classes"], in_channels=meta["in_channels"],
                         **meta["arch_kwargs"])
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    steps = len(y) // bs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, PERMUTED_EPOCHS * steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(PERMUTED_EPOCHS):
        order = torch.randperm(len(y), generator=gen)
        for i in range(steps):
            batch = order[i * bs:(i + 1) * bs]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        train_acc = (model(x).argmax(1) == y).float().mean().item()
        test_x = normalize(torch.as_tensor(ds.test_x), meta["mean"], meta["std"])
        test_acc = (model(test_x).argmax(1) == torch.as_tensor(ds.test_y)).float().mean().item()
    return model, {"epochs": PERMUTED_EPOCHS, "train_accuracy": train_acc, "test_accuracy": test_acc}


# ------------------------------------------------------------------ the run file

def _resumable(run_dir: Path, meta: dict, config: dict) -> dict | None:
    """A previous, current sanity.json computed with the same ``config`` (partial or not), else None."""
    try:
        old = read(run_dir, SANITY, meta, missing_ok=True)
    except ArtifactError:
        return None
    return old if isinstance(old, dict) and old.get("config") == config else None


def precompute_sanity(run_dir, data_dir=None, *, images: int = 200, batch_size: int = MAP_BATCH, seed: int = 0,
                      device: str = "auto", progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``run_dir/sanity.json`` (layout: :mod:`.sanity_file`); returns its path.

    The file is rewritten after every cascade step with ``"complete": false``; a later call with
    the same settings continues after the last step written. ``progress(done, total)`` counts maps.
    ``device`` (:func:`trainer.runtime.pick_device`) runs the maps; the permuted-label copy trains on the CPU.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    meta = run.meta
    test_x, labels = load_test_split(meta["dataset"], data_dir, meta["input_size"])
    idx = stratified_indices(np.asarray(labels), images, seed)
    dev = pick_device(device)
    x = to_input(test_x[idx], meta).to(dev)
    targets = torch.as_tensor(run.predictions["logits"][idx].argmax(1), dtype=torch.long, device=dev)
    model = private_model(run.load_model(str(dev)))
    blocks = parameterised_blocks(model)
    settings, skipped = applicable_methods(model, x, meta)
    config = {"images": len(idx), "seed": seed, "blocks": [b for b, _ in blocks],
              "methods": [s.method for s in settings],
              "skipped": skipped, "target": "the trained model's predicted class",
              "rule": "a module holding parameters belongs to its parent's block (its own when the parent is "
                      "the model); nested blocks merge; re-initialised head first by reset_parameters()"}
    data = _resumable(run_dir, meta, config) or {"config": config, "images": idx.tolist(),
                                                 "cascade": {s.method: [] for s in settings}, "complete": False}
    if data["complete"]:
        return run_dir / SANITY.name
    done_steps = min(map(len, data["cascade"].values()), default=0)
    retrain = meta["dataset"]["name"] in RETRAINABLE and "data_randomisation" not in data
    per_pass = len(idx) * len(settings)
    total, done = per_pass * (1 + len(blocks) - done_steps + retrain), 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    original = all_maps(model, x, targets, settings, batch_size, tick)
    if retrain:
        data["data_randomisation"] = data_randomisation(meta, seed, x, targets, settings, original, batch_size, tick)
    for step, (name, modules) in enumerate(reversed(blocks)):
        randomise(modules, seed + len(blocks) - 1 - step)  # seed + the block's position from the input
        if step < done_steps:
            continue  # already in the file: only its weights are needed, to go on from there
        scores = compare(original, all_maps(model, x, targets, settings, batch_size, tick))
        randomised = [b for b, _ in reversed(blocks)][:step + 1]
        for method, score in scores.items():
            data["cascade"][method].append({"randomised": randomised, "block": name, **score})
        write(run_dir, SANITY, meta, data)  # still "complete": false, so a killed job continues from here
    return write(run_dir, SANITY, meta, {**data, "complete": True})


def data_randomisation(meta: dict, seed: int, x: torch.Tensor, targets: torch.Tensor, settings: list[Settings],
                       original: dict[str, np.ndarray], batch_size: int, tick: Callable[[int], None]) -> dict:
    """Maps of a permuted-label copy (:func:`train_permuted`) against the trained model's ``original`` maps."""
    model, training = train_permuted(meta, seed)
    model = private_model(model.to(x.device))
    maps = all_maps(model, x, targets, settings, batch_size, tick)
    return {"training": training, "methods": compare(original, maps),
            "how": "same architecture trained on permuted training labels by a plain torch loop (xai_dashboard.sanity)"}
