"""One optimisation step of the training loop (:mod:`trainer.train`), also run alone by ``bench/``.

Augmentation happens on the device, per batch (:mod:`trainer.augment`, optionally AugMix views);
the forward pass runs under autocast and the loss is per example, so distillation and AugMix can
add their terms before it is reduced.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from trainer.augment import augment_batch
from trainer.augmix import AugMixer
from trainer.config import TrainConfig
from trainer.distill import Distiller
from trainer.runtime import autocast


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
