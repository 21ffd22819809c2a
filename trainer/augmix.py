"""AugMix (Hendrycks et al., ICLR 2020) and its Jensen-Shannon consistency loss: ``xai-train --augmix``.

Each training batch (already shifted and mirrored by :mod:`trainer.augment`) gets two AugMix views from
torchvision's ``transforms.AugMix`` with the paper's CIFAR settings (severity 3, width 3, chains of 1-3
operations, alpha 1) and without the operations that overlap the common corruptions (``all_ops=False``:
no contrast, colour, brightness or sharpness), so a corruption benchmark stays unseen. Clean images and
both views go through the model in one pass; the loss is the clean images' loss plus ``augmix_weight``
(12 in the paper) times the Jensen-Shannon divergence of the three predicted distributions.

torchvision draws one chain of operations per call, so calls are made on groups of :data:`GROUP` images
that share their operations but not their mixing weights (a chain per image costs ~10x more on a 2-core
CPU). Its draws come from torch's global generator: each batch runs under a forked generator seeded from
the trainer's augmentation generator, so a run stays reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torchvision.transforms import AugMix

from trainer.preprocess import denormalize, normalize

GROUP = 16


def js_divergence(*logits: torch.Tensor) -> torch.Tensor:
    """Per-example Jensen-Shannon divergence (nats) ``(N,)`` of the softmax distributions of ``logits``
    (each ``(N, K)``): the mean over them of ``KL(p_i || M)``, ``M`` their mean, clamped at 1e-7 before
    the log as in the paper's code."""
    probs = [F.softmax(z.float(), dim=1) for z in logits]
    log_mixture = torch.stack(probs).mean(0).clamp(1e-7, 1).log()
    return torch.stack([F.kl_div(log_mixture, p, reduction="none").sum(1) for p in probs]).mean(0)


@dataclass
class AugMixer:
    """Makes the views of a normalised batch and adds the consistency term to a per-example loss."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    weight: float = 12.0
    transform: AugMix = field(default_factory=lambda: AugMix(severity=3, mixture_width=3, chain_depth=-1,
                                                              alpha=1.0, all_ops=False))

    def views(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Normalised ``(N, C, H, W)`` -> its two AugMix views, normalised, ``(2N, C, H, W)`` on ``x``'s device."""
        pixels = (denormalize(x.detach().float(), self.mean, self.std) * 255).round().clamp(0, 255)
        pixels = pixels.to(torch.uint8).cpu()
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=gen))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = [self.transform(group) for _ in range(2) for group in pixels.split(GROUP)]
        return normalize(torch.cat(out).to(x.device), self.mean, self.std)

    def loss(self, logits: torch.Tensor, clean_loss: torch.Tensor) -> torch.Tensor:
        """``logits`` ``(3N, K)`` of clean, first and second views; ``clean_loss`` ``(N,)`` -> total ``(N,)``."""
        return clean_loss + self.weight * js_divergence(*logits.split(len(clean_loss)))
