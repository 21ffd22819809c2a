"""The training loop: batch-level augmentation, resume, DDP.

Data flow: :func:`trainer.data.load_dataset` -> a split of :mod:`trainer.batches`
(in memory: uint8 tensors normalised once on the device; image folders: files
decoded in DataLoader workers) -> per-epoch permutation -> normalised batches
-> :func:`augment_batch` -> model -> loss -> optimiser. Each epoch ends with an
atomic checkpoint; the run ends by writing the run directory (see :mod:`trainer.rundir`).
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
from trainer.augment import augment_batch
from trainer.augmix import AugMixer
from trainer.config import TrainConfig
from trainer.batches import make_splits
from trainer.data import Dataset, FolderDataset, load_dataset, train_val_split
from trainer.distill import Distiller
from trainer.models import create_model, get_spec
from trainer.optim import LookaheadAverage, Schedule, build_optimizer
from trainer.runtime import autocast, init_distributed, pick_dtype, provenance
from trainer.sources import folder_root
from trainer.writer import finish_run


RUN_FILES = (rundir.WEIGHTS, rundir.PREDICTIONS, rundir.HISTORY, rundir.META)


@dataclass
class State:
    epoch: int = 0                      # epochs completed
    step: int = 0
    history: list = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    train_seconds: float = 0.0
    provenance: dict = field(default_factory=dict)  # captured when training starts, not when it ends


def build_model(cfg: TrainConfig, ds: Dataset | FolderDataset):
    kwargs = dict(cfg.model_kwargs)
    if cfg.pretrained:
        kwargs["pretrained"] = True
    if "input_size" in inspect.signature(get_spec(cfg.model).builder).parameters:
        kwargs.setdefault("input_size", ds.input_size)
    model = create_model(cfg.model, num_classes=len(ds.classes), in_channels=ds.in_channels, **kwargs)
    kwargs.pop("pretrained", None)  # the saved weights are complete: reloading must not download
    return model, kwargs


def class_weights(y: torch.Tensor, k: int) -> torch.Tensor:
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
class Stepper:
    """One optimisation step: augment -> forward under autocast -> loss -> backward -> update.

    Called with a normalised batch ``x`` ``(B, C, H, W)``, labels ``(B,)`` and the
    images' dataset indices ``(B,)``; returns (per-example loss ``(B,)``, logits ``(B, K)``).
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    cfg: TrainConfig
    device: torch.device
    dtype: torch.dtype | None
    weights: torch.Tensor | None = None
    distiller: Distiller | None = None
    world: int = 1
    augmixer: AugMixer | None = None  # --augmix
    # fp16 autocast (CUDA without bf16) needs loss scaling; bf16 and fp32 do not.
    scaler: torch.amp.GradScaler | None = None

    def __post_init__(self):
        if self.scaler is None and self.dtype == torch.float16:
            self.scaler = torch.amp.GradScaler(self.device.type)

    def __call__(self, x, y, idx, epoch: int, gen: torch.Generator):
        # The named ranges cost nothing unless a profiler listens (bench/profile_epoch.py).
        cfg = self.cfg
        with record_function("augment"):
            x = augment_batch(x, idx, epoch, cfg.augment, gen, cfg.seed)
            if self.augmixer:
                x = torch.cat([x, self.augmixer.views(x, gen)])
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        with record_function("forward"), autocast(self.device, self.dtype):
            views = self.model(x)  # with --augmix: the clean images', then both AugMix views' logits
            logits, x = views[:len(y)], x[:len(y)]
            loss_vec = F.cross_entropy(logits.float(), y, weight=self.weights, label_smoothing=cfg.label_smoothing, reduction="none")
            if self.distiller:
                loss_vec = self.distiller.loss(x, logits, loss_vec)
            if self.augmixer:
                loss_vec = self.augmixer.loss(views, loss_vec)
        # DDP averages gradients over ranks; a summed loss must be scaled back up to stay per-example.
        loss = loss_vec.sum() * self.world if cfg.loss_reduction == "sum" else loss_vec.mean()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            with record_function("backward"):
                loss.backward()
            with record_function("optimizer"):
                self.optimizer.step()
        return loss_vec.detach(), logits.detach()


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
    ds = load_dataset(cfg.dataset, cfg.data_dir, cfg.input_size, workers=cfg.workers)
    ds = ds.subset(cfg.train_subset, cfg.test_subset)
    k = len(ds.classes)
    tr_idx, va_idx = train_val_split(len(ds.train_y), cfg.val_fraction, cfg.seed)
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
    train_split, val_split, mean, std = make_splits(ds, tr_idx, va_idx, device, mf)
    torch.manual_seed(cfg.seed)
    model, arch_kwargs = build_model(cfg, ds)
    if hasattr(model, "init_whitening"):
        model.init_whitening(train_split.whitening_sample(5000))
    model = model.to(device, memory_format=mf)
    distiller = Distiller.from_config(cfg, model, ds, device) if cfg.teacher else None
    extra = list(distiller.parameters()) if distiller else []
    optimizer = build_optimizer(model, cfg, extra)
    steps_per_epoch = max(1, len(train_split) // cfg.batch_size)
    total_steps = math.ceil(cfg.epochs * steps_per_epoch)
    schedule = Schedule(cfg, optimizer, total_steps, steps_per_epoch)
    ema = LookaheadAverage(model, total_steps) if cfg.lookahead_every else None
    weights = class_weights(train_split.labels, k).to(device) if cfg.class_weighting else None
    if resume:
        state, best = restore(out, model, optimizer, schedule, ema, distiller)
        state.provenance.setdefault("resumed_by", []).append(provenance(device, dtype)["command"])
    else:
        state, best = State(provenance=provenance(device, dtype)), None
    ddp_model = model
    if dist.world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    augmixer = AugMixer(tuple(mean), tuple(std), cfg.augmix_weight) if cfg.augmix else None
    step = Stepper(ddp_model, optimizer, cfg, device, dtype, weights, distiller, dist.world, augmixer=augmixer)
    n_epochs = math.ceil(cfg.epochs)
    model.train()
    while state.epoch < n_epochs and state.step < total_steps:
        epoch = state.epoch
        # Full batches only (the shuffle changes which images wait); matches steps_per_epoch.
        # Not past total_steps either, so a file-backed split decodes no image it will not train on.
        order = epoch_order(train_split.labels, cfg, epoch, k)
        n_batches = min(steps_per_epoch, total_steps - state.step)
        batches = [order[i * cfg.batch_size:(i + 1) * cfg.batch_size][dist.rank::dist.world] for i in range(n_batches)]
        record = run_epoch(step, train_split.batches(batches), len(batches), state, schedule, ema, model, dist)
        if val_split is not None:
            record["val_loss"], record["val_acc"] = evaluate_split(model, val_split, device, dtype, weights)
            schedule.after_epoch(record["val_loss"])
            if record["val_loss"] < state.best_val_loss:
                state.best_val_loss, state.best_epoch, state.bad_epochs = record["val_loss"], epoch + 1, 0
                if cfg.patience:
                    best = {k_: v.detach().clone() for k_, v in model.state_dict().items()}
            else:
                state.bad_epochs += 1
        else:
            schedule.after_epoch(None)
        state.history.append(record)
        state.epoch += 1
        if dist.is_main:
            msg = " ".join(f"{k_}={v:.4g}" if isinstance(v, float) else f"{k_}={v}" for k_, v in record.items())
            print(msg, flush=True)
            groups = {"ema": ema.state_dict()} if ema else {}
            groups.update({"best": best} if best is not None else {})
            groups.update({"distill": distiller.state_dict()} if distiller else {})
            checkpoint.save_state(out, model=model, optimizer=optimizer, extra_tensors=groups, info={
                "config": cfg.to_dict(), "schedule": schedule.state_dict(), "state": state.__dict__,
            })
        if cfg.patience and state.bad_epochs >= cfg.patience:
            if dist.is_main:
                print(f"early stop: no val-loss improvement for {cfg.patience} epochs; best epoch {state.best_epoch}")
            break
    if ema:
        ema.finalize(model)
    if best is not None:
        model.load_state_dict(best)
    if dist.world > 1:
        torch.distributed.barrier()
    if dist.is_main:
        write_run(out, cfg, model, arch_kwargs, ds, mean, std, state, device, dtype, t_start)
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return out


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
    _, info, _ = checkpoint.load_state(run_dir)
    return TrainConfig.from_dict(info["config"])
