"""Can an attribution map be trusted? Deletion, insertion, ROAD, two baselines and a verdict.

Pure functions of (model, normalised image ``(C, H, W)``, target class, map ``(H, W)``):

* **deletion / insertion** (RISE, Petsiuk et al. 2018): pixels switch, in the order of
  decreasing attribution, from the image to the mean colour (deletion) or from a Gaussian
  blur of the image (kernel 11, sigma 5) to the image (insertion), in ``steps`` equal steps;
  the curve is the target's softmax probability at the ``steps + 1`` points from 0 % to
  100 %, its AUC the trapezoid rule over x in [0, 1]. ``steps`` defaults to the image's
  side (32 for CIFAR-10; 224 at 224 px, RISE's step of one row's worth of pixels);
  step ``k`` has removed ``floor(k * H * W / steps)`` pixels.
* **ties** are broken by a stable sort of the row-major flattened map: of equal values,
  the pixel nearer the top-left goes first. Every curve and ROAD use this one order.
* **ROAD** (Rong et al. 2022, :mod:`.road`): most- and least-relevant-first removal at
  10 ... 90 % with noisy linear imputation; the curves are the target's probability and
  whether it is still the top class ("accuracy" on one image).
* **baselines**: random maps as smooth as the method (``layer_hw``: uniform noise at the
  layer's resolution, upsampled bilinearly like Grad-CAM; otherwise one value per pixel),
  seeds 0 ... 7, and the Sobel edge magnitude of the image, which knows nothing of the model.
  They do not depend on the method's map: :func:`baselines` scores them once per image,
  target and layer resolution, for every method compared on that image.
* **verdict**: deletion alone misleads, because scattered removal breaks an image faster
  than removing a region, so the method is judged against its smoothness-matched random
  maps on insertion and deletion, and by ROAD's LeRF - MoRF gap.

Every forward pass runs in chunks of ``BATCH_PIXELS`` input pixels (128 images at
32x32, 2 at 224x224), so memory stays bounded whatever the image and the step count.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from .road import LEVELS, NOISE, road_images

BLUR_KERNEL, BLUR_SIGMA = 11, 5.0  # RISE's insertion start
SEEDS = 8
BATCH_PIXELS = 128 * 32 * 32  # 128 CIFAR images: the fastest chunk on a 2-core CPU (bench/faithfulness_latency.py)


def default_steps(h: int, w: int) -> int:
    """Curve steps for an ``h`` x ``w`` image: its longer side."""
    return max(h, w)


def removal_ranks(maps) -> torch.Tensor:
    """Maps ``(H, W)`` or ``(M, H, W)`` -> int64 ``(M, H*W)``: each pixel's place (0 = first) in the
    order of decreasing attribution, ties in row-major order (stable sort)."""
    maps = torch.as_tensor(maps)
    maps = maps.double() if not maps.is_floating_point() else maps
    flat = maps.reshape(-1, maps.shape[-2] * maps.shape[-1])
    if not torch.isfinite(flat).all():
        raise ValueError("attribution map contains NaN or inf")
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    return ranks.scatter_(1, order, torch.arange(flat.shape[1]).expand_as(order))


def class_probabilities(model: nn.Module, batches: Iterable[torch.Tensor], *, bf16: bool = False) -> torch.Tensor:
    """Softmax float32 CPU ``(B, K)`` over the concatenated ``(b, C, H, W)`` batches, without gradients.

    Each batch moves to the model's device; ``bf16`` runs the model under bfloat16 autocast.
    """
    device = next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device
    out = []
    with torch.inference_mode():
        for batch in batches:
            # channels-last is ~35 % faster for CPU convolutions (see explain.shared_model)
            batch = batch.to(device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(batch)
            out.append(torch.softmax(logits.float(), 1).cpu())
    return torch.cat(out)


def curve_probabilities(model: nn.Module, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], ranks: torch.Tensor,
                        target: int, steps: int, *, bf16: bool = False) -> torch.Tensor:
    """Target probability float32 ``(P, M, steps + 1)`` as pixels switch from ``start`` to ``end``, for
    each of the ``P`` ``(start, end)`` pairs (each ``(C, H, W)``) and each of the ``M`` orders in ``ranks``
    ``(M, H*W)`` (from :func:`removal_ranks`).

    At step ``k`` of a curve the pixels ranked below ``floor(k * H * W / steps)`` show ``end``. Step 0
    is ``start`` and step ``steps`` is ``end`` whatever the order, so those two images are forwarded once
    per pair and shared by its ``M`` curves: ``P * (2 + M * (steps - 1))`` images, built chunk by chunk
    and forwarded in one stream of batches, never all at once.
    """
    m, n = ranks.shape
    h, w = pairs[0][0].shape[-2:]
    counts = torch.arange(steps + 1) * n // steps
    p = len(pairs)
    inner = m * (steps - 1)
    # what each forwarded image is: (pair, order, step); first both ends of every pair, then the inner points
    pair = torch.cat([torch.arange(p).repeat_interleave(2), torch.arange(p).repeat_interleave(inner)])
    order = torch.cat([torch.zeros(2 * p, dtype=torch.long), torch.arange(m).repeat_interleave(steps - 1).repeat(p)])
    step = torch.cat([torch.tensor([0, steps]).repeat(p), torch.arange(1, steps).repeat(p * m)])
    starts, ends = torch.stack([s for s, _ in pairs]), torch.stack([e for _, e in pairs])
    chunk = max(1, BATCH_PIXELS // n)

    def batches():
        for lo in range(0, len(pair), chunk):
            at = slice(lo, lo + chunk)
            shown = ranks[order[at]] < counts[step[at]].unsqueeze(1)
            yield torch.where(shown.view(-1, 1, h, w), ends[pair[at]], starts[pair[at]])

    probs = class_probabilities(model, batches(), bf16=bf16)[:, target]
    out = torch.empty(p, m, steps + 1)
    out[:, :, 0], out[:, :, steps] = probs[0:2 * p:2, None], probs[1:2 * p:2, None]
    out[:, :, 1:steps] = probs[2 * p:].view(p, m, steps - 1)
    return out


def perturbation_curves(model: nn.Module, start: torch.Tensor, end: torch.Tensor, ranks: torch.Tensor,
                        target: int, steps: int, *, bf16: bool = False) -> torch.Tensor:
    """Target probability float32 ``(M, steps + 1)`` as pixels switch from ``start`` to ``end``
    (``(C, H, W)``) in the ``M`` orders of ``ranks`` ``(M, H*W)``: :func:`curve_probabilities` of one pair."""
    return curve_probabilities(model, [(start, end)], ranks, target, steps, bf16=bf16)[0]


def blurred(x: torch.Tensor) -> torch.Tensor:
    """RISE's insertion start: ``x`` ``(C, H, W)`` blurred with kernel 11, sigma 5 (the kernel
    shrinks to the largest odd size below the image side, which reflect padding needs)."""
    k = min(BLUR_KERNEL, (min(x.shape[-2:]) - 1) // 2 * 2 + 1)
    return gaussian_blur(x, [k, k], [BLUR_SIGMA, BLUR_SIGMA])


def deletion_insertion(model: nn.Module, x: torch.Tensor, target: int, ranks: torch.Tensor, steps: int, *,
                       mean_colour=0.0, bf16: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves, each float ``(M, steps + 1)``, for ``x`` ``(C, H, W)`` and
    ``ranks`` ``(M, H*W)``; deleted pixels take ``mean_colour`` (scalar or ``C`` values, input units)."""
    fill = torch.as_tensor(mean_colour, dtype=x.dtype).reshape(-1, 1, 1).expand_as(x)
    deletion, insertion = curve_probabilities(model, [(x, fill), (blurred(x), x)], ranks, target, steps, bf16=bf16)
    return deletion.numpy(), insertion.numpy()


def auc(curves) -> np.ndarray | float:
    """Trapezoid area under ``(..., P)`` curves sampled evenly on x in [0, 1]: a constant c gives c."""
    curves = np.asarray(curves, dtype=np.float64)
    area = np.trapezoid(curves, dx=1.0 / (curves.shape[-1] - 1), axis=-1)
    return float(area) if area.ndim == 0 else area


def random_maps(h: int, w: int, *, layer_hw: tuple[int, int] | None = None, seeds: int = SEEDS,
                first_seed: int = 0) -> torch.Tensor:
    """``seeds`` random maps float32 ``(seeds, H, W)``; map ``i`` comes from seed ``first_seed + i``.

    With ``layer_hw`` ``(h', w')`` the noise is drawn at that resolution and upsampled bilinearly
    (as Grad-CAM is), so the map is as smooth as a layer method's; without it, one value per pixel.
    """
    lh, lw = layer_hw or (h, w)
    gens = [torch.Generator().manual_seed(first_seed + i) for i in range(seeds)]
    noise = torch.stack([torch.rand(1, lh, lw, generator=g) for g in gens])
    if (lh, lw) == (h, w):
        return noise[:, 0]
    return F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude float32 ``(H, W)`` of ``x`` ``(C, H, W)``, summed over channels."""
    # One channel at a time: on the (C, H, W) array ndimage.sobel would also smooth across channels.
    mags = [np.hypot(ndimage.sobel(c, axis=0), ndimage.sobel(c, axis=1)) for c in np.asarray(x, dtype=np.float64)]
    return torch.from_numpy(np.sum(mags, axis=0).astype(np.float32))


def road(model: nn.Module, x: torch.Tensor, target: int, attr_map, *, levels: Sequence[float] = LEVELS,
         noise: float = NOISE, seed: int = 0, bf16: bool = False) -> dict:
    """ROAD for ``x`` ``(C, H, W)`` or ``(1, C, H, W)`` and ``attr_map`` ``(H, W)``: one forward of the ``2 * L`` imputed images.

    Returns ``{levels, morf_prob, lerf_prob, morf_correct, lerf_correct`` (lists of ``L``),
    ``morf_mean, lerf_mean, gap`` (= lerf_mean - morf_mean of the probabilities), ``noise, seed}``.
    """
    ranks = removal_ranks(attr_map)[0].numpy()
    images = torch.from_numpy(road_images(_image(x).numpy(), ranks, levels, noise=noise, seed=seed))
    probs = class_probabilities(model, [images.flatten(0, 1)], bf16=bf16).view(2, len(levels), -1)
    prob, correct = probs[..., target], (probs.argmax(-1) == target).float()
    morf, lerf = prob.mean(1).tolist()
    return {"levels": list(levels), "morf_prob": prob[0].tolist(), "lerf_prob": prob[1].tolist(),
            "morf_correct": correct[0].tolist(), "lerf_correct": correct[1].tolist(),
            "morf_mean": morf, "lerf_mean": lerf, "gap": lerf - morf, "noise": noise, "seed": seed}


def verdict(scores: dict) -> dict:
    """``{"verdict", "reasons"}`` from a :func:`faithfulness` result (without its verdict).

    On insertion (higher is better) and deletion (lower is better) the method beats random when it
    is better than the random maps' mean by more than their spread over seeds (one s.d.).
    "faithful": beats random on both and ROAD's LeRF - MoRF gap is positive; "not better than
    random": beats it on neither; "weak" otherwise.
    """
    from .figures import score_text as sc  # the card's numbers are written alike

    rnd, rd = scores["random"], scores["road"]
    reasons, wins = [], []
    for name, sign in (("insertion", 1.0), ("deletion", -1.0)):
        ours, theirs, spread = scores[f"{name}_auc"], rnd[f"{name}_auc"], rnd[f"{name}_auc_std"]
        wins.append(sign * (ours - theirs) > spread)
        reasons.append(f"{name} AUC {sc(ours)} vs {sc(theirs)} ± {sc(spread)} for {rnd['kind']} random maps "
                       f"({'lower' if sign < 0 else 'higher'} is better): "
                       + ("better" if wins[-1] else "not clearly better"))
    road_ok = rd["gap"] > 0
    reasons.append(f"ROAD: target probability {sc(rd['lerf_mean'])} with the least relevant pixels removed, "
                   f"{sc(rd['morf_mean'])} with the most relevant removed (gap {sc(rd['gap'], signed=True)}): "
                   + ("the map ranks what matters first" if road_ok else "removing the top pixels hurts no more"))
    edge = scores["edge"]
    if edge["insertion_auc"] >= scores["insertion_auc"]:
        reasons.append(f"an edge detector, blind to the model, does as well on insertion ({sc(edge['insertion_auc'])})")
    if all(wins) and road_ok:
        label = "faithful"
    elif not any(wins):
        label = "not better than random"
    else:
        label = "weak"
    return {"verdict": label, "reasons": reasons}


def _image(x) -> torch.Tensor:
    """``(1, C, H, W)`` or ``(C, H, W)``, numpy or tensor -> float32 CPU ``(C, H, W)``."""
    x = torch.as_tensor(x, dtype=torch.float32).detach().cpu()
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"one image expected, got a batch of {x.shape[0]}")
        x = x[0]
    return x


def _auc_summary(del_curves: np.ndarray, ins_curves: np.ndarray) -> dict:
    d, i = np.atleast_1d(auc(del_curves)), np.atleast_1d(auc(ins_curves))
    return {"deletion_auc": float(d.mean()), "insertion_auc": float(i.mean()),
            "deletion_auc_std": float(d.std()), "insertion_auc_std": float(i.std()),
            "deletion_aucs": d.tolist(), "insertion_aucs": i.tolist()}


def baselines(model: nn.Module, x, target: int, *, layer_hw: tuple[int, int] | None = None, mean_colour=0.0,
              steps: int | None = None, seeds: int = SEEDS, bf16: bool = False) -> dict:
    """Deletion / insertion AUCs of the random and edge baselines for image ``x`` ``(C, H, W)``.

    They do not depend on the method's map, so a caller comparing methods on one image computes
    them once per ``layer_hw`` and hands them to :func:`faithfulness`. Returns ``{"target",
    "steps", "random": {kind, seeds, deletion_auc, insertion_auc, *_std, *_aucs, *_curve (mean over seeds)},
    "edge": {deletion_auc, insertion_auc, deletion_curve, insertion_curve}}``.
    """
    if seeds < 1:
        raise ValueError("at least one random seed is needed for the baseline")
    x = _image(x)
    h, w = x.shape[-2:]
    steps = steps or default_steps(h, w)
    maps = torch.cat([random_maps(h, w, layer_hw=layer_hw, seeds=seeds), edge_map(x)[None]])
    dele, ins = deletion_insertion(model, x, target, removal_ranks(maps), steps, mean_colour=mean_colour, bf16=bf16)
    kind = f"{layer_hw[0]}x{layer_hw[1]}-upsampled" if layer_hw else "pixel"
    return {"target": int(target), "steps": steps,
            "random": {"kind": kind, "seeds": seeds, **_auc_summary(dele[:-1], ins[:-1]),
                       "deletion_curve": dele[:-1].mean(0).tolist(), "insertion_curve": ins[:-1].mean(0).tolist()},
            "edge": {"deletion_auc": auc(dele[-1]), "insertion_auc": auc(ins[-1]),
                     "deletion_curve": dele[-1].tolist(), "insertion_curve": ins[-1].tolist()}}


def faithfulness(model: nn.Module, x, target: int, attr_map, *, layer_hw: tuple[int, int] | None = None,
                 mean_colour=0.0, steps: int | None = None, seeds: int = SEEDS, road_seed: int = 0,
                 bf16: bool = False, reference: dict | None = None) -> dict:
    """Every measure for one image, as JSON-able Python values.

    ``model``: eval-mode module taking normalised ``(N, C, H, W)``; ``x``: that image, ``(1, C, H, W)``
    or ``(C, H, W)``; ``attr_map``: ``(H, W)``; ``layer_hw``: the layer resolution of a layer method
    (Grad-CAM), ``None`` for pixel methods; ``mean_colour``: the deletion fill in input units (0 for
    the dataset mean after normalisation); ``reference``: :func:`baselines` of this image and target,
    computed here when ``None``. Returns ``{target, steps, deletion_auc, insertion_auc,
    deletion_curve, insertion_curve, road, random, edge, verdict}``.
    """
    if model.training:
        raise ValueError("model must be in eval mode: batch statistics would couple the perturbed images")
    x = _image(x)
    h, w = x.shape[-2:]
    attr = torch.as_tensor(attr_map).detach().cpu()
    if attr.shape != (h, w):
        raise ValueError(f"attribution map {tuple(attr.shape)} does not match the image {(h, w)}")
    steps = steps or default_steps(h, w)
    if reference is None:
        reference = baselines(model, x, target, layer_hw=layer_hw, mean_colour=mean_colour, steps=steps,
                              seeds=seeds, bf16=bf16)
    if (reference["target"], reference["steps"]) != (int(target), steps):
        raise ValueError("reference baselines were computed for another target or step count")
    dele, ins = deletion_insertion(model, x, target, removal_ranks(attr), steps, mean_colour=mean_colour, bf16=bf16)
    scores = {
        "target": int(target), "steps": steps,
        "deletion_auc": auc(dele[0]), "insertion_auc": auc(ins[0]),
        "deletion_curve": dele[0].tolist(), "insertion_curve": ins[0].tolist(),
        "road": road(model, x, target, attr, seed=road_seed, bf16=bf16),
        "random": reference["random"], "edge": reference["edge"],
    }
    scores["verdict"] = verdict(scores)
    return scores
