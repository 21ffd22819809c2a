"""The training loop: batch-level augmentation, resume, DDP.

Data flow: :func:`trainer.data.load_dataset` -> a split of :mod:`trainer.batches`
(in memory: uint8 tensors normalised once on the device; image folders: files
decoded in DataLoader workers) -> per-epoch permutation -> normalised batches
-> one :class:`trainer.step.Stepper` step each (augment -> model -> loss -> optimiser).
:func:`train` builds a :class:`Session` (:func:`start_session`), runs its epochs (:func:`fit`:
each ends with an atomic checkpoint) and ends by writing the run directory (:func:`finish`,
see :mod:`trainer.rundir`).
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function
from tqdm import tqdm

from trainer import checkpoint, outdir, rundir
from trainer.augmix import AugMixer
from trainer.batches import FileSplit, MemorySplit, make_splits
from trainer.config import TrainConfig
from trainer.data import Dataset, FolderDataset, load_dataset, train_val_split
from trainer.distill import Distiller
from trainer.models import create_model, get_spec
from trainer.optim import LookaheadAverage, Schedule, build_optimizer
from trainer.runtime import Dist, autocast, init_distributed, pick_dtype, provenance
from trainer.sources import folder_root
from trainer.step import Stepper
from trainer.writer import finish_run


RUN_FILES = (rundir.WEIGHTS, rundir.PREDICTIONS, rundir.HISTORY, rundir.META)


@dataclass
class State:
    """Progress that a checkpoint keeps and --resume restores (saved as its ``info["state"]``)."""

    epoch: int = 0                      # epochs completed
    step: int = 0
    history: list = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    train_seconds: float = 0.0
    provenance: dict = field(default_factory=dict)  # captured when training starts, not when it ends


def build_model(cfg: TrainConfig, ds: Dataset | FolderDataset):
    """The configured model for ``ds``'s classes, channels and input size; returns (model, the architecture
    kwargs to record, without ``pretrained``)."""
    kwargs = dict(cfg.model_kwargs)
    if cfg.pretrained:
        kwargs["pretrained"] = True
    if "input_size" in inspect.signature(get_spec(cfg.model).builder).parameters:
        kwargs.setdefault("input_size", ds.input_size)
    model = create_model(cfg.model, num_classes=len(ds.classes), in_channels=ds.in_channels, **kwargs)
    kwargs.pop("pretrained", None)  # the saved weights are complete: reloading must not download
    return model, kwargs


def class_weights(y: torch.Tensor, k: int) -> torch.Tensor:
    """Weight per class ``(K,)`` from labels ``(N,)``: total / (K * count), so 1 for every class when balanced."""
    counts = torch.bincount(y, minlength=k).float().clamp(min=1)
    return counts.sum() / (k * counts)


def epoch_order(labels: torch.Tensor, cfg: TrainConfig, epoch: int, k: int) -> torch.Tensor:
    """Positions ``(N,)`` into a split with CPU ``labels`` ``(N,)``: a permutation, or a class-balanced draw."""
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    n = len(labels)
    if cfg.oversample:
        w = class_weights(labels, k)[labels]
        return torch.multinomial(w, n, replacement=True, generator=gen)
    return torch.randperm(n, generator=gen)


def evaluate_split(model, split, device, dtype, criterion_weights) -> tuple[float, float]:
    """(mean loss, accuracy) of the model on a split of :mod:`trainer.batches`."""
    model.eval()
    loss, correct, seen = 0.0, 0, 0
    # 1000 images of 32 px per forward pass; fewer for larger images, whose activations grow with the area.
    chunk = max(32, 1000 * 32 * 32 // (split.size * split.size))
    with torch.no_grad(), autocast(device, dtype):
        for xb, yb, _ in split.batches(list(torch.arange(len(split)).split(chunk))):
            out = model(xb).float()
            loss += F.cross_entropy(out, yb, weight=criterion_weights, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
            seen += len(yb)
    model.train()
    return loss / max(seen, 1), correct / max(seen, 1)


def class_report(labels: np.ndarray, preds: np.ndarray, classes) -> str:
    """Per-class recall and support, then accuracy; balanced accuracy too when the
    test classes are imbalanced (largest / smallest support >= 2), where plain
    accuracy hides a neglected small class. ``labels`` and ``preds`` int ``(N,)``."""
    k = len(classes)
    support = np.bincount(labels, minlength=k)
    hits = np.bincount(labels[preds == labels], minlength=k)
    width = max(len("class"), *(len(str(c)) for c in classes))
    lines = [f"{'class':<{width}}  recall  support"]
    for c, h, n in zip(classes, hits, support):
        lines.append(f"{str(c):<{width}}  " + (f"{h / n:6.4f}" if n else "   n/a") + f"  {n:7d}")
    line = f"accuracy {float((preds == labels).mean()):.4f}"
    present = support[support > 0]
    if len(present) and present.max() >= 2 * present.min():
        line += (f", balanced accuracy {float(np.mean(hits[support > 0] / present)):.4f}"
                 f" (imbalanced test classes: support {present.min()} to {present.max()})")
    return "\n".join([*lines, line])


@dataclass
class Session:
    """One training run's working set: built by :func:`start_session`, advanced by :func:`fit`."""

    cfg: TrainConfig
    out: Path
    dist: Dist
    device: torch.device
    dtype: torch.dtype | None
    ds: Dataset | FolderDataset
    train_split: MemorySplit | FileSplit
    val_split: MemorySplit | FileSplit | None
    mean: list[float]                   # per-channel statistics of the training images, [0, 1] scale (C,)
    std: list[float]
    model: torch.nn.Module              # the bare model; only ``step`` holds the DDP wrapper
    arch_kwargs: dict
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    ema: LookaheadAverage | None
    distiller: Distiller | None
    weights: torch.Tensor | None        # --class-weighting: loss weight per class (K,)
    step: Stepper
    steps_per_epoch: int
    total_steps: int
    state: State
    best: dict | None                   # the best-val-loss weights kept for --patience


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train according to ``cfg`` and write ``cfg.out``; returns the run directory.

    A non-empty ``cfg.out`` is refused (:class:`trainer.outdir.OutDirRefused`) before any
    data is read unless ``resume`` or ``overwrite``; overwriting replaces only the files a
    previous run recorded in its manifest.
    """
    out = Path(cfg.out)
    outdir.check_out(out, resume=resume, overwrite=overwrite)
    if cfg.dataset.startswith("imagefolder:"):  # recorded absolute: the dashboard may start elsewhere
        cfg = cfg.replace(dataset=f"imagefolder:{folder_root(cfg.dataset).resolve()}")
    dist, device = init_distributed(cfg.device)
    dtype = pick_dtype(cfg.precision, device)
    if overwrite and not resume and dist.is_main:
        outdir.remove_recorded(out)  # the old run is no longer complete; its other files stay
    t_start = time.perf_counter()
    session = start_session(cfg, out, dist, device, dtype, resume)
    fit(session)
    finish(session, t_start)
    return out


def start_session(cfg: TrainConfig, out: Path, dist: Dist, device: torch.device, dtype: torch.dtype | None,
                  resume: bool) -> Session:
    """Read the data, build the model, optimiser and schedule (the seed set first, so a run repeats), and
    start the state afresh or, with ``resume``, from ``out``'s checkpoint."""
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
    ds = load_dataset(cfg.dataset, cfg.data_dir, cfg.input_size, workers=cfg.workers)
    ds = ds.subset(cfg.train_subset, cfg.test_subset)
    tr_idx, va_idx = train_val_split(len(ds.train_y), cfg.val_fraction, cfg.seed)
    train_split, val_split, mean, std = make_splits(ds, tr_idx, va_idx, device, mf)
    torch.manual_seed(cfg.seed)
    model, arch_kwargs = build_model(cfg, ds)
    if hasattr(model, "init_whitening"):
        model.init_whitening(train_split.whitening_sample(5000))
    model = model.to(device, memory_format=mf)
    distiller = Distiller.from_config(cfg, model, ds, device) if cfg.teacher else None
    optimizer = build_optimizer(model, cfg, list(distiller.parameters()) if distiller else [])
    steps_per_epoch = max(1, len(train_split) // cfg.batch_size)
    total_steps = math.ceil(cfg.epochs * steps_per_epoch)
    schedule = Schedule(cfg, optimizer, total_steps, steps_per_epoch)
    ema = LookaheadAverage(model, total_steps) if cfg.lookahead_every else None
    weights = class_weights(train_split.labels, len(ds.classes)).to(device) if cfg.class_weighting else None
    if resume:
        state, best = restore(out, model, optimizer, schedule, ema, distiller)
        state.provenance.setdefault("resumed_by", []).append(provenance(device, dtype)["command"])
    else:
        state, best = State(provenance=provenance(device, dtype)), None
    ddp_model = model
    if dist.world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    augmixer = AugMixer(tuple(mean), tuple(std), cfg.augmix_weight) if cfg.augmix else None
    step = Stepper(ddp_model, optimizer, cfg, device, dtype, weights, distiller, dist.world, augmixer=augmixer)
    return Session(cfg, out, dist, device, dtype, ds, train_split, val_split, mean, std, model, arch_kwargs,
                   optimizer, schedule, ema, distiller, weights, step, steps_per_epoch, total_steps, state, best)


def fit(s: Session) -> None:
    """Train epoch by epoch until ``cfg.epochs`` (or their step count) is done or --patience stops early;
    the main process prints each epoch's record and checkpoints it."""
    cfg, state = s.cfg, s.state
    n_epochs = math.ceil(cfg.epochs)
    s.model.train()
    while state.epoch < n_epochs and state.step < s.total_steps:
        epoch = state.epoch
        # Full batches only (the shuffle changes which images wait); matches steps_per_epoch.
        # Not past total_steps either, so a file-backed split decodes no image it will not train on.
        order = epoch_order(s.train_split.labels, cfg, epoch, len(s.ds.classes))
        n_batches = min(s.steps_per_epoch, s.total_steps - state.step)
        batches = [order[i * cfg.batch_size:(i + 1) * cfg.batch_size][s.dist.rank::s.dist.world]
                   for i in range(n_batches)]
        record = run_epoch(s.step, s.train_split.batches(batches), len(batches), state, s.schedule, s.ema, s.model,
                           s.dist)
        validate(s, record, epoch)
        state.history.append(record)
        state.epoch += 1
        if s.dist.is_main:
            save_epoch(s, record)
        if cfg.patience and state.bad_epochs >= cfg.patience:
            if s.dist.is_main:
                print(f"early stop: no val-loss improvement for {cfg.patience} epochs; best epoch {state.best_epoch}")
            break


def validate(s: Session, record: dict, epoch: int) -> None:
    """Add epoch ``epoch``'s validation loss and accuracy to ``record`` and give the loss to the schedule;
    track the best epoch (keeping its weights for --patience) and the epochs since it."""
    if s.val_split is None:
        s.schedule.after_epoch(None)
        return
    record["val_loss"], record["val_acc"] = evaluate_split(s.model, s.val_split, s.device, s.dtype, s.weights)
    s.schedule.after_epoch(record["val_loss"])
    state = s.state
    if record["val_loss"] < state.best_val_loss:
        state.best_val_loss, state.best_epoch, state.bad_epochs = record["val_loss"], epoch + 1, 0
        if s.cfg.patience:
            s.best = {k: v.detach().clone() for k, v in s.model.state_dict().items()}
    else:
        state.bad_epochs += 1


def save_epoch(s: Session, record: dict) -> None:
    """Print the epoch's ``record`` and write the checkpoint --resume continues from."""
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()), flush=True)
    groups = {"ema": s.ema.state_dict()} if s.ema else {}
    groups.update({"best": s.best} if s.best is not None else {})
    groups.update({"distill": s.distiller.state_dict()} if s.distiller else {})
    checkpoint.save_state(s.out, model=s.model, optimizer=s.optimizer, extra_tensors=groups, info={
        "config": s.cfg.to_dict(), "schedule": s.schedule.state_dict(), "state": s.state.__dict__,
    })


def finish(s: Session, t_start: float) -> None:
    """Put the final weights in the model (the lookahead average, or the best epoch's), write the run
    directory from the main process and leave the process group."""
    if s.ema:
        s.ema.finalize(s.model)
    if s.best is not None:
        s.model.load_state_dict(s.best)
    if s.dist.world > 1:
        torch.distributed.barrier()
    if s.dist.is_main:
        write_run(s.out, s.cfg, s.model, s.arch_kwargs, s.ds, s.mean, s.std, s.state, s.device, s.dtype, t_start)
    if s.dist.world > 1:
        torch.distributed.destroy_process_group()


def run_epoch(step: Stepper, batches, n_batches: int, state: State, schedule: Schedule,
              ema: LookaheadAverage | None, model, dist) -> dict:
    """Train on ``batches`` (``(x, y, idx)`` from a split of :mod:`trainer.batches`); returns the
    epoch's history record without validation."""
    cfg, epoch = step.cfg, state.epoch
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout etc.: reproducible after resume
    aug_gen = torch.Generator().manual_seed(cfg.seed * 7_919 + epoch)
    t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
    bar = tqdm(batches, total=n_batches, desc=f"epoch {epoch + 1}/{math.ceil(cfg.epochs)}",
               disable=not dist.is_main, leave=False, unit="batch")
    for x, y, idx in bar:
        schedule.before_step(state.step, epoch)
        loss_vec, logits = step(x, y, idx, epoch, aug_gen)
        state.step += 1
        if ema and state.step % cfg.lookahead_every == 0:
            with record_function("lookahead"):
                ema.update(model, state.step)
        seen += len(y)
        loss_sum += loss_vec.sum().item()
        correct += (logits.argmax(1) == y).sum().item()
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                        img_s=f"{seen * dist.world / (time.perf_counter() - t0):.0f}")
    bar.close()
    seconds = time.perf_counter() - t0
    state.train_seconds += seconds
    return dict(epoch=epoch + 1, train_loss=loss_sum / max(seen, 1), train_acc=correct / max(seen, 1),
                lr=schedule.current_lr(), seconds=seconds, images_per_s=seen * dist.world / seconds)


def restore(out: Path, model, optimizer, schedule: Schedule, ema, distiller) -> tuple[State, dict | None]:
    """Load ``out``'s checkpoint into the given objects; returns (state, best weights or None)."""
    groups, info, opt_state = checkpoint.load_state(out)
    model.load_state_dict(groups["model"])
    optimizer.load_state_dict(opt_state)
    schedule.load_state_dict(info["schedule"])
    if ema:
        ema.load_state_dict(groups["ema"])
    if distiller and "distill" in groups:
        distiller.load_state_dict(groups["distill"])
    return State(**info["state"]), groups.get("best")


def write_run(out: Path, cfg: TrainConfig, model, arch_kwargs: dict, ds: Dataset | FolderDataset, mean, std,
              state: State, device, dtype, t_start: float) -> None:
    """Write the run directory (every file listed in the manifest first), drop the checkpoint,
    and print the per-class report."""
    folder = isinstance(ds, FolderDataset)
    outdir.record(out, RUN_FILES + ((rundir.TEST_FILES,) if folder else ()))
    if folder:  # before meta.json, which is written last and marks the run complete
        rundir.write_test_files(out, ds.test_files.records())
    meta = finish_run(out, cfg, model, arch_kwargs, ds, mean, std, state, device, dtype, t_start)
    checkpoint.clear_state(out)
    p = rundir.load_predictions(out, meta)
    print(class_report(p["label"], p["logits"].argmax(1), ds.classes), flush=True)


def resume_config(run_dir: Path) -> TrainConfig:
    """The TrainConfig the checkpoint in ``run_dir`` was started with (for ``--resume``)."""
    _, info, _ = checkpoint.load_state(run_dir)
    return TrainConfig.from_dict(info["config"])
