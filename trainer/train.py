"""The training loop: in-memory batches, batch-level augmentation, resume, DDP.

Data flow: :func:`trainer.data.load_dataset` (uint8 tensors) -> normalised
float tensors on the device -> per-epoch permutation -> :func:`augment_batch`
-> model -> loss -> optimiser. Each epoch ends with an atomic checkpoint;
the run ends by writing the run directory (see :mod:`trainer.rundir`).
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from trainer import checkpoint
from trainer.augment import augment_batch
from trainer.config import TrainConfig
from trainer.data import Dataset, channel_stats, load_dataset, train_val_split
from trainer.distill import Distiller
from trainer.models import create_model, get_spec
from trainer.optim import LookaheadAverage, Schedule, build_optimizer
from trainer.preprocess import normalize
from trainer.runtime import autocast, init_distributed, pick_dtype, provenance
from trainer.writer import finish_run


@dataclass
class Split:
    """Normalised float images ``(N, C, H, W)`` on the device, labels ``(N,)``, dataset indices."""

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor


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


def subset(ds: Dataset, cfg: TrainConfig) -> Dataset:
    tr, te = cfg.train_subset or len(ds.train_y), cfg.test_subset or len(ds.test_y)
    return Dataset(ds.name, ds.train_x[:tr], ds.train_y[:tr], ds.test_x[:te], ds.test_y[:te], ds.classes)


def build_model(cfg: TrainConfig, ds: Dataset):
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


def epoch_order(split: Split, cfg: TrainConfig, epoch: int, k: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    n = len(split.y)
    if cfg.oversample:
        w = class_weights(split.y.cpu(), k)[split.y.cpu()]
        return torch.multinomial(w, n, replacement=True, generator=gen)
    return torch.randperm(n, generator=gen)


def evaluate_split(model, split: Split, device, dtype, criterion_weights) -> tuple[float, float]:
    """(mean loss, accuracy) of the model on already-normalised images."""
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad(), autocast(device, dtype):
        for xb, yb in zip(split.x.split(1000), split.y.split(1000)):
            out = model(xb).float()
            loss += F.cross_entropy(out, yb, weight=criterion_weights, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
    model.train()
    return loss / len(split.y), correct / len(split.y)


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
    # fp16 autocast (CUDA without bf16) needs loss scaling; bf16 and fp32 do not.
    scaler: torch.amp.GradScaler | None = None

    def __post_init__(self):
        if self.scaler is None and self.dtype == torch.float16:
            self.scaler = torch.amp.GradScaler(self.device.type)

    def __call__(self, x, y, idx, epoch: int, gen: torch.Generator):
        cfg = self.cfg
        x = augment_batch(x, idx, epoch, cfg.augment, gen, cfg.seed)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.dtype):
            logits = self.model(x)
            loss_vec = F.cross_entropy(logits.float(), y, weight=self.weights, label_smoothing=cfg.label_smoothing, reduction="none")
            if self.distiller:
                loss_vec = self.distiller.loss(x, logits, loss_vec)
        # DDP averages gradients over ranks; a summed loss must be scaled back up to stay per-example.
        loss = loss_vec.sum() * self.world if cfg.loss_reduction == "sum" else loss_vec.mean()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return loss_vec.detach(), logits.detach()


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train according to ``cfg`` and write ``cfg.out``; returns the run directory."""
    dist, device = init_distributed(cfg.device)
    dtype = pick_dtype(cfg.precision, device)
    out = Path(cfg.out)
    t_start = time.perf_counter()
    ds = subset(load_dataset(cfg.dataset, cfg.data_dir, cfg.input_size), cfg)
    k = len(ds.classes)
    tr_idx, va_idx = train_val_split(len(ds.train_y), cfg.val_fraction, cfg.seed)
    mean, std = channel_stats(ds.train_x[tr_idx])
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format

    def to_split(idx: torch.Tensor) -> Split:
        x = normalize(ds.train_x[idx].to(device), mean, std).contiguous(memory_format=mf)
        return Split(x, ds.train_y[idx].to(device), idx)

    train_split, val_split = to_split(tr_idx), (to_split(va_idx) if len(va_idx) else None)
    torch.manual_seed(cfg.seed)
    model, arch_kwargs = build_model(cfg, ds)
    if hasattr(model, "init_whitening"):
        model.init_whitening(train_split.x[:5000].contiguous())
    model = model.to(device, memory_format=mf)
    distiller = Distiller.from_config(cfg, model, ds, device) if cfg.teacher else None
    extra = list(distiller.parameters()) if distiller else []
    optimizer = build_optimizer(model, cfg, extra)
    steps_per_epoch = max(1, len(train_split.y) // cfg.batch_size)
    total_steps = math.ceil(cfg.epochs * steps_per_epoch)
    schedule = Schedule(cfg, optimizer, total_steps, steps_per_epoch)
    ema = LookaheadAverage(model, total_steps) if cfg.lookahead_every else None
    weights = class_weights(train_split.y.cpu(), k).to(device) if cfg.class_weighting else None
    state, best = State(), None
    if resume:
        groups, info, opt_state = checkpoint.load_state(out)
        model.load_state_dict(groups["model"])
        optimizer.load_state_dict(opt_state)
        schedule.load_state_dict(info["schedule"])
        if ema:
            ema.load_state_dict(groups["ema"])
        if distiller and "distill" in groups:
            distiller.load_state_dict(groups["distill"])
        best = groups.get("best")
        state = State(**info["state"])
        state.provenance.setdefault("resumed_by", []).append(provenance(device, dtype)["command"])
    else:
        state.provenance = provenance(device, dtype)
    ddp_model = model
    if dist.world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    step = Stepper(ddp_model, optimizer, cfg, device, dtype, weights, distiller, dist.world)
    n_epochs = math.ceil(cfg.epochs)
    model.train()
    while state.epoch < n_epochs and state.step < total_steps:
        epoch = state.epoch
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout etc.: reproducible after resume
        aug_gen = torch.Generator().manual_seed(cfg.seed * 7_919 + epoch)
        order = epoch_order(train_split, cfg, epoch, k)
        # Full batches only (the shuffle changes which images wait); matches steps_per_epoch.
        batches = [order[i * cfg.batch_size:(i + 1) * cfg.batch_size] for i in range(steps_per_epoch)]
        t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{n_epochs}", disable=not dist.is_main, leave=False, unit="batch")
        for b in bar:
            if state.step >= total_steps:
                break
            b = b[dist.rank::dist.world] if dist.world > 1 else b
            b_dev = b.to(device)
            schedule.before_step(state.step, epoch)
            loss_vec, logits = step(train_split.x[b_dev], train_split.y[b_dev], train_split.idx[b], epoch, aug_gen)
            y = train_split.y[b_dev]
            state.step += 1
            if ema and state.step % cfg.lookahead_every == 0:
                ema.update(model, state.step)
            seen += len(y)
            loss_sum += loss_vec.sum().item()
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{seen * dist.world / (time.perf_counter() - t0):.0f}")
        bar.close()
        seconds = time.perf_counter() - t0
        state.train_seconds += seconds
        record = dict(epoch=epoch + 1, train_loss=loss_sum / max(seen, 1), train_acc=correct / max(seen, 1),
                      lr=schedule.current_lr(), seconds=seconds, images_per_s=seen * dist.world / seconds)
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
            if best is not None:
                groups["best"] = best
            if distiller:
                groups["distill"] = distiller.state_dict()
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
        finish_run(out, cfg, model, arch_kwargs, ds, mean, std, state, device, dtype, t_start)
        checkpoint.clear_state(out)
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return out


def resume_config(run_dir: Path) -> TrainConfig:
    _, info, _ = checkpoint.load_state(run_dir)
    return TrainConfig.from_dict(info["config"])
