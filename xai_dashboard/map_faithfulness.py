"""The faithfulness of the map a user is looking at (:mod:`.faithfulness`), bounded, locked and cached.

Used by the explanations card and by ``POST /api/explain`` with ``faithfulness=1``.

* **Baselines**: a method is compared with random maps as smooth as its own (:func:`layer_hw`):
  Grad-CAM's map is its layer's map upsampled, so its random maps are noise at the layer's
  resolution, upsampled; every other method (Guided Grad-CAM included, whose map is multiplied by
  pixel-level guided backpropagation) gets one random value per pixel.
* **Cost rule**: :func:`passes` forward passes of one image, ``2 * (2 + (seeds + 2) * (steps - 1))``
  for the curves of the map, the edge map and the random seeds (a curve's first and last images are
  the same for every map, so they are forwarded once), plus ``2 * len(LEVELS)`` for ROAD: 642 at
  32 px (steps = side = 32). The estimate is that count times one fp32 forward pass on this worker
  (a third of :func:`.explain.pass_seconds`), even where bf16 or cached baselines make it cheaper.
  Over the request budget, the curves drop to
  :data:`COARSE_STEPS` steps (the side-by-side grid's 33 points: 224 px costs as many passes as
  32 px); still over it, the request is refused (400) before any work.
* **Cache**: the scores are JSON in the explain cache under the map's own cache key +
  ``"faithfulness"`` + :data:`VERSION` + the step count, so a new checkpoint never hits old scores.
  The baselines (9 of the 10 maps scored) depend on the image, the target and the random maps'
  resolution, not on the method, so they are cached too (:func:`baselines_key`): another method on
  the same image forwards only its own map's 64 images and ROAD's 18.
* **Precision**: on a CPU with native bfloat16 (:func:`trainer.runtime.cpu_has_bf16`) the perturbed
  images go through the model under bf16 autocast, about twice as fast as fp32 for the CIFAR
  networks; ``bench/faithfulness_latency.py`` prints how far the AUCs move (largest difference over
  20 images x 10 maps). The precision is part of both cache keys.
"""
from __future__ import annotations

import json

import numpy as np

from trainer.runtime import cpu_has_bf16

from . import explain, faithfulness
from .explain_spec import ExplainError, Settings, cache_key, image_digest, layer_shape, model_fingerprint
from .methods import METHODS
from .road import LEVELS

VERSION = 2  # bump when the scores' maths or layout changes
BF16 = cpu_has_bf16()  # a property of the processor: fixed for the process
PRECISION = "bf16" if BF16 else "fp32"
COARSE_STEPS = 32
API_KEYS = ("target", "steps", "deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve",
            "random", "edge", "road", "verdict")
MEANINGS = {
    "deletion": "Deletion: lower is better — removing the most important pixels first (painted the mean colour) "
                "should destroy the prediction fast.",
    "insertion": "Insertion: higher is better — restoring the most important pixels first onto a blurred copy "
                 "should bring the prediction back fast.",
    "road": "ROAD: the most relevant (MoRF) or least relevant (LeRF) pixels are replaced by values imputed "
            "from their neighbours, which hides the removal's shape; LeRF should keep the probability higher "
            "than MoRF (a positive gap).",
    "random": "Random: the same measures for random maps as smooth as this one (mean ± s.d. over 8 seeds); "
              "a faithful map must beat them.",
    "edge": "Edge: a Sobel edge detector knows nothing of the model; a map no better than it explains the "
            "image, not the model.",
}


def layer_hw(settings: Settings, meta: dict) -> tuple[int, int] | None:
    """The resolution of the random baseline matching ``settings`` (resolved): the layer's (h, w) for a
    map that is an upsampled layer map (Grad-CAM), None (per pixel) otherwise."""
    method = METHODS[settings.method]
    if not method.needs_layer or method.signed:
        return None
    return tuple(layer_shape(meta, settings.layer)[1:])


def passes(steps: int, seeds: int = faithfulness.SEEDS) -> int:
    """Forward passes of one image's faithfulness: curves of the map, the edge map and ``seeds`` random maps,
    and ROAD."""
    return 2 * (2 + (seeds + 2) * (steps - 1)) + 2 * len(LEVELS)


def affordable_steps(run) -> int:
    """The curves' step count within the request budget (module docstring), or ExplainError 400."""
    side = max(run.images.shape[-2:])
    forward = explain.pass_seconds(run) / 3
    budget = explain.budget_seconds()
    for steps in dict.fromkeys((faithfulness.default_steps(side, side), min(side, COARSE_STEPS))):
        if passes(steps) * forward <= budget:
            return steps
    need = passes(min(side, COARSE_STEPS))
    raise ExplainError(f"scoring this map needs about {need} forward passes (~{need * forward:.0f} s here), over "
                       f"this server's {budget:.0f} s limit per request")


def scores_key(meta: dict, settings: Settings, target, image, steps: int) -> str:
    return json.dumps([cache_key(meta, settings, target, image_digest(image)), "faithfulness", VERSION, steps,
                       PRECISION])


def baselines_key(meta: dict, image, target: int, hw: tuple[int, int] | None, steps: int) -> str:
    """Cache key of :func:`.faithfulness.baselines` of uint8 ``image`` for ``target``: the model's, not the method's."""
    return json.dumps([model_fingerprint(meta), "faithfulness-baselines", VERSION, image_digest(image), int(target),
                       list(hw) if hw else None, steps, faithfulness.SEEDS, PRECISION])


def _cached_json(cache, key: str) -> dict | None:
    hit = cache.get(key) if cache is not None else None
    return json.loads(hit) if isinstance(hit, str) else None


def cached_scores(run, image: np.ndarray, target: int, settings: Settings, cache) -> dict | None:
    """The scores of the map of resolved ``settings`` for class ``target`` of uint8 ``image``, if ``cache`` has them."""
    if cache is None:
        return None
    return _cached_json(cache, scores_key(run.meta, settings, target, image, affordable_steps(run)))


def map_faithfulness(run, image: np.ndarray, target: int, settings: Settings, heat: np.ndarray, cache=None) -> dict:
    """:func:`.faithfulness.faithfulness` of map ``heat`` ``(H, W)`` of uint8 ``image`` ``(C, H, W)`` for class
    ``target`` under resolved ``settings``: from ``cache`` when there, else computed on the attribution
    thread (ExplainError 400 over the budget, 503 when the queue cannot serve it in time) and cached."""
    if not isinstance(target, int):
        raise ExplainError("faithfulness needs a single target class, not a difference of two")
    hit = cached_scores(run, image, target, settings, cache)
    if hit is not None:
        return hit
    steps, hw = affordable_steps(run), layer_hw(settings, run.meta)
    x = explain.to_input(image, run.meta)[0]
    bkey = baselines_key(run.meta, image, target, hw, steps)
    reference = _cached_json(cache, bkey)  # None: faithfulness() computes them

    def keep(scores: dict) -> None:
        if cache is not None:
            cache.set(bkey, json.dumps({k: scores[k] for k in ("target", "steps", "random", "edge")}))
            cache.set(scores_key(run.meta, settings, target, image, steps), json.dumps(scores))

    return explain.on_attribution_thread(
        run, lambda model: faithfulness.faithfulness(model, x, target, heat, steps=steps, layer_hw=hw, bf16=BF16,
                                                     reference=reference),
        passes(steps) * explain.pass_seconds(run) / 3, keep)


def api_block(scores: dict) -> dict:
    """What ``/api/explain`` returns under ``faithfulness`` (ROAD's per-level details included)."""
    return {k: scores[k] for k in API_KEYS}
