"""Inference on a whole split: logits, embeddings and test-time augmentation.

Stored predictions are computed in fp32 so that anyone re-running the
shipped weights reproduces them; test-time augmentation may use autocast.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trainer.preprocess import normalize
from trainer.runtime import autocast


@torch.no_grad()
def predict(model, images: torch.Tensor, mean, std, *, batch_size: int = 500,
            device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
            channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(N, C, H, W)`` -> (logits ``(N, K)`` float32, embeddings ``(N, D)`` float32)."""
    device = torch.device(device)
    model.eval()
    logits, embeds = [], []
    for chunk in images.split(batch_size):
        x = normalize(chunk.to(device), mean, std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            e = model.embed(x)
            out = model.head(e)
        logits.append(out.float().cpu())
        embeds.append(e.float().cpu())
    return torch.cat(logits).numpy(), torch.cat(embeds).numpy()


@torch.no_grad()
def predict_tta(model, images: torch.Tensor, mean, std, *, batch_size: int = 500,
                device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                channels_last: bool = False, plain: np.ndarray | None = None) -> np.ndarray:
    """Logits ``(N, K)`` averaged over the image, its mirror and 1-pixel shifts.

    Half the weight goes to (image + mirror), half to the four shifted views
    (up-left and down-right, each mirrored too), as in the published recipe.
    ``plain``: the image's own logits ``(N, K)`` if already computed (by :func:`predict`),
    which saves one of the six forward passes.
    """
    device = torch.device(device)
    model.eval()
    out = []
    for start, chunk in zip(range(0, len(images), batch_size), images.split(batch_size)):
        x = normalize(chunk.to(device), mean, std)
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        h, w = x.shape[-2:]
        views = [x, padded[..., :h, :w], padded[..., 2:, 2:]]
        views += [v.flip(-1) for v in views]
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        known = [torch.from_numpy(plain[start:start + len(chunk)]).to(device)] if plain is not None else []
        with autocast(device, dtype):
            ls = known + [model(v.contiguous(memory_format=fmt)).float() for v in views[len(known):]]
        base = (ls[0] + ls[3]) / 2
        shift = (ls[1] + ls[2] + ls[4] + ls[5]) / 4
        out.append((0.5 * base + 0.5 * shift).cpu())
    return torch.cat(out).numpy()


def accuracy(logits: np.ndarray, labels) -> float:
    return float((np.asarray(logits).argmax(1) == np.asarray(labels)).mean())
