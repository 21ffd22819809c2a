"""Optimisers (SGD, Adam(W), Muon on the convolution filters), learning-rate schedules
and the lookahead weight average.

Schedules that depend only on the step (cosine, one-cycle, triangle, step)
are closed-form functions of the step counter, so resuming needs no
scheduler state; only reduce-on-plateau keeps state (saved as JSON).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.sgd import sgd as sgd_update

from trainer.config import TrainConfig


def _param_groups(model: nn.Module, cfg: TrainConfig, extra: list) -> list[dict]:
    """Groups: weights; normalisation biases (lr x bias_lr_scale); with the muon optimiser, the
    convolution filters (4-D weights that train); the whitening bias (trains briefly)."""
    whiten_bias = getattr(getattr(model, "whiten", None), "bias", None)
    norm_bias, other = [], []
    for module in model.modules():
        is_norm = isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm))
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or p is whiten_bias:
                continue
            (norm_bias if is_norm and name == "bias" else other).append(p)
    other += [p for p in extra if p.requires_grad]
    s = cfg.bias_lr_scale
    filters = [p for p in other if p.ndim == 4] if cfg.optimizer == "muon" else []
    if filters:
        other = [p for p in other if p.ndim != 4]
    groups = [
        dict(params=other, lr=cfg.lr, weight_decay=cfg.weight_decay, name="weights"),
        dict(params=norm_bias, lr=cfg.lr * s, weight_decay=cfg.weight_decay / s, name="norm_bias"),
    ]
    if filters:  # no weight decay: Muon renormalises these weights every step
        groups.append(dict(params=filters, lr=cfg.muon_lr, momentum=cfg.muon_momentum, weight_decay=0.0,
                           name="filters", muon=True))
    if whiten_bias is not None and whiten_bias.requires_grad:
        groups.append(dict(params=[whiten_bias], lr=cfg.lr, weight_decay=cfg.weight_decay, name="whiten_bias"))
    for g in groups:
        g["base_lr"] = g["lr"]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig, extra: list | None = None) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg, extra or [])
    if cfg.optimizer == "muon":
        return Muon(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, ns_steps=cfg.muon_ns_steps)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    # --momentum is Adam's beta1 (its help says so); beta2 keeps torch's default. 0.9, the flag's default, is
    # torch's beta1 too, so runs that never set it train as before.
    return cls(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Jordan et al.'s quintic: steepest slope at 0 that still lands near 1


def newton_schulz(g: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalise a matrix ``g`` ``(m, n)``: returns ``U S' V^T`` in bf16,
    where ``g = U S V^T`` and ``S'`` lies roughly in [0.5, 1.5] (exactly ``U V^T`` would need
    many more steps; Muon's authors found this does not matter).

    Each step applies ``x -> a x + b (x x^T) x + c (x x^T)^2 x``, which maps every singular
    value ``s`` to ``a s + b s^3 + c s^5`` and leaves the singular vectors alone; dividing by
    the Frobenius norm first puts all singular values in (0, 1].
    """
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16()
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the wide orientation: the Gram matrix is the smaller side squared
        x = x.T
    x = x / (x.norm() + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon (orthogonalised momentum) for groups marked ``muon=True``; Nesterov SGD for the others.

    One optimiser, so the training loop, the schedule and the checkpoint see the usual
    ``param_groups`` / ``state_dict``. Per Muon step on a filter ``w`` ``(out, in, kh, kw)``
    (as in the published airbench94_muon): ``buf <- momentum * buf + grad``; the update direction
    ``grad + momentum * buf`` (Nesterov) or ``buf``; ``w <- w * sqrt(out) / ||w||`` (the filters
    feed BatchNorm, so their scale is free and fixing it fixes the effective step size); then
    ``w <- w - lr * newton_schulz(direction viewed as (out, in*kh*kw))``.

    torch >= 2.9 ships ``torch.optim.Muon``, but it accepts only 2-D parameters and has no
    weight renormalisation; ``tests/test_muon.py`` checks this class against it on 2-D weights.
    """

    def __init__(self, groups: list[dict], lr: float, momentum: float, nesterov: bool = True, ns_steps: int = 3):
        super().__init__(groups, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=0.0,
                                      ns_steps=ns_steps, muon=False))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["muon"]:
                for p in params:
                    self._muon_update(p, group)
                continue
            bufs = [self.state[p].get("momentum_buffer") for p in params]
            sgd_update(params, [p.grad for p in params], bufs, weight_decay=group["weight_decay"],
                       momentum=group["momentum"], lr=group["lr"], dampening=0.0,
                       nesterov=group["nesterov"], maximize=False)
            for p, buf in zip(params, bufs):  # sgd() created the buffers on the first step
                self.state[p]["momentum_buffer"] = buf

    def _muon_update(self, p: torch.Tensor, group: dict) -> None:
        mu = group["momentum"]
        buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
        buf.mul_(mu).add_(p.grad)
        direction = p.grad.add(buf, alpha=mu) if group["nesterov"] else buf
        p.mul_(p.size(0) ** 0.5 / p.norm())
        update = newton_schulz(direction.reshape(len(p), -1), group["ns_steps"])
        p.add_(update.reshape(p.shape).to(p.dtype), alpha=-group["lr"])


class Schedule:
    """Sets every group's lr before each step; handles plateau decay and the whitening-bias cut-off."""

    def __init__(self, cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int):
        self.cfg, self.opt = cfg, optimizer
        self.total, self.per_epoch = total_steps, steps_per_epoch
        self.plateau_factor = 1.0
        self.plateau = None
        if cfg.schedule == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.gamma, patience=2)

    def factor(self, step: int, epoch: int) -> float:
        c, t = self.cfg, step / max(1, self.total)
        if c.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if c.schedule == "step":
            return c.gamma ** (epoch // c.step_size)
        if c.schedule == "triangle":
            # Linear warm-up from 0.2 to 1, then linear decay to lr_end at the last step.
            w = c.warmup_fraction
            return 0.2 + 0.8 * t / w if t < w else 1 + (c.lr_end - 1) * (t - w) / (1 - w)
        if c.schedule == "onecycle":
            # Cosine warm-up from lr/25 to lr, then cosine annealing to ~0 (the one-cycle policy).
            w = c.warmup_fraction or 0.3
            if t < w:
                return 1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * t / w))
            return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (t - w) / (1 - w)))
        if c.schedule == "plateau":
            return self.plateau_factor
        return 1.0

    def before_step(self, step: int, epoch: int) -> None:
        f = self.factor(step, epoch)
        for g in self.opt.param_groups:
            lr = g["base_lr"] * f
            if g.get("name") == "whiten_bias" and step >= self.cfg.whiten_bias_epochs * self.per_epoch:
                lr = 0.0
            g["lr"] = lr

    def after_epoch(self, val_loss: float | None) -> None:
        if self.plateau is not None and val_loss is not None:
            before = self.opt.param_groups[0]["lr"]
            self.plateau.step(val_loss)
            # ReduceLROnPlateau wrote a decayed lr; fold it into our factor instead.
            self.plateau_factor *= self.opt.param_groups[0]["lr"] / before if before else 1.0

    def current_lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        d = {"plateau_factor": self.plateau_factor}
        if self.plateau is not None:
            d["plateau"] = {k: v for k, v in self.plateau.state_dict().items() if k != "optimizer"}
        return d

    def load_state_dict(self, d: dict) -> None:
        self.plateau_factor = d["plateau_factor"]
        if self.plateau is not None:
            self.plateau.load_state_dict(d["plateau"])


class LookaheadAverage:
    """An exponential average of the weights that is copied back into the model.

    Every few steps: ``avg <- lerp(avg, w, 1 - decay)`` then ``w <- avg``.
    The decay grows as ``0.95**5 * progress**3``: no averaging early, strong at the end.
    """

    def __init__(self, model: nn.Module, total_steps: int):
        self.total = total_steps
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, decay: float | None = None) -> None:
        if decay is None:
            decay = 0.95**5 * (step / self.total) ** 3
        for k, v in model.state_dict().items():
            if k in self.avg:
                self.avg[k].lerp_(v, 1 - decay)
                v.copy_(self.avg[k])

    def finalize(self, model: nn.Module) -> None:
        self.update(model, self.total, decay=1.0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.avg

    def load_state_dict(self, d: dict[str, torch.Tensor]) -> None:
        for k in self.avg:
            self.avg[k].copy_(d[k])
