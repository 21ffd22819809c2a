"""Attributions of a loaded run: the registry's methods (:mod:`.methods`) over a cache.

Every map is returned as float32 ``(N, H, W)`` (or ``(H, W)`` for one image) in
``[0, 1]`` at the network's input resolution, whatever the method, or with ``signed=True``
as computed (sign and magnitude kept, for the page's diverging scale); the maths of each
method is in :mod:`.attributions`.

A target is a class index or a pair ``(a, b)`` meaning "logit[a] - logit[b]"
("why a rather than b").

Every attribution runs on the process's low-priority attribution thread
(:mod:`.attribution_queue`), under ``LoadedRun.lock`` since Captum hooks the shared model;
Captum removes its hooks in ``finally`` blocks and :func:`hook_count` lets the tests prove it.
Predictions stay on the request thread at normal priority and use
``LoadedRun.inference_model()``, a copy that is never hooked, so they take no lock and
never queue behind an attribution. An attribution's cost (the registry's passes times
this worker's measured cost of one pass) is checked against ``$XAI_EXPLAIN_BUDGET_S``
before any work starts, and the queue admits it only while the work ahead fits too (else
503). What may be requested (:class:`Settings`, targets) and the cache keys live in
:mod:`.explain_spec`, which needs no torch; images may be numpy arrays or tensors.
"""
from __future__ import annotations

import os
import time
from typing import Callable, TypeVar

import numpy as np
import torch
from torch import nn

from trainer.preprocess import normalize

from .attribution_queue import attribution_queue
from .attributions import PredictedLogit, gradcam_layer_map
from .explain_spec import ExplainError, Settings, Target, cache_key, image_digest, predict_key
from .methods import METHODS

T = TypeVar("T")


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` non-negative -> each map divided by its maximum (an all-zero map stays zero)."""
    peak = maps.flatten(1).amax(1).view(-1, 1, 1)
    return torch.where(peak > 1e-12, maps / peak.clamp_min(1e-12), torch.zeros_like(maps))


def gradcam_maps(model: nn.Module, layer: str, x: torch.Tensor, target, forward: nn.Module | None = None
                 ) -> torch.Tensor:
    """Grad-CAM ``(N, H, W)`` in [0, 1] for normalised input ``x`` ``(N, C, H, W)``.

    ``target``: class index, ``(N,)`` tensor of indices, or a pair ``(a, b)``; or, with a
    ``forward`` wrapper around ``model`` (such as :class:`.PredictedLogit`), the index of its output.
    """
    return normalise_maps(gradcam_layer_map(model, layer, x, target, forward))


def unavailable_reason(model: nn.Module, x: torch.Tensor, method: str) -> str | None:
    """Why ``method`` is not defined for ``model`` (probed with input ``x``), or None; hold the run's lock."""
    requirement = METHODS[method].requirement()
    return requirement(model, x) if requirement else None


def attribute(model: nn.Module, x: torch.Tensor, target, settings: Settings, signed: bool = False) -> np.ndarray:
    """Attribution maps float32 ``(N, H, W)`` in [0, 1], or ``signed`` as computed (see
    :mod:`.methods`); ``settings`` must be :meth:`~Settings.resolved`.

    The caller holds the model's lock: Captum hooks modules of ``model``. A method the
    model does not support raises :class:`ExplainError` (400) saying why.
    """
    reason = unavailable_reason(model, x, settings.method)
    if reason:
        raise ExplainError(f"{METHODS[settings.method].label} is not available for this run: {reason}")
    maps = METHODS[settings.method].function()(model, x, target, settings, signed=signed).float()
    return (maps if signed else normalise_maps(maps)).cpu().numpy()  # maps of a GPU job (precompute) too


def hook_count(model: nn.Module) -> int:
    """Forward/backward (pre-)hooks on every submodule plus the global ones; 0 when nothing leaked."""
    from torch.nn.modules import module as M

    per_module = sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())
    return per_module + len(M._global_forward_hooks) + len(M._global_backward_hooks) \
        + len(M._global_forward_pre_hooks)


def to_input(image, meta: dict) -> torch.Tensor:
    """uint8 ``(C, H, W)`` or ``(N, C, H, W)``, numpy or tensor -> normalised float32 ``(N, C, H, W)``,
    channels-last."""
    x = torch.as_tensor(image)
    x = x if x.dim() == 4 else x.unsqueeze(0)
    return normalize(x, meta["mean"], meta["std"]).contiguous(memory_format=torch.channels_last)


def shared_model(run) -> nn.Module:
    """``run.model()`` with its 4-D weights in channels-last layout; hold ``run.lock``.

    CPU convolutions run ~35% faster that way (one 32x32 forward of ``fast``: ~7.4 -> ~4.8 ms).
    The conversion happens once, under the lock, and changes no result beyond float rounding.
    """
    model = run.model()
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and not conv.weight.is_contiguous(memory_format=torch.channels_last):
        model.to(memory_format=torch.channels_last)
    return model


def inference_model(run) -> nn.Module:
    """``run.inference_model()`` in channels-last layout: needs no lock (it is never hooked)."""
    model = run.inference_model()
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and not conv.weight.is_contiguous(memory_format=torch.channels_last):
        with run._model_lock:  # converted once, not by two first requests at the same time
            model.to(memory_format=torch.channels_last)
    return model


BUDGET_ENV = "XAI_EXPLAIN_BUDGET_S"
DEFAULT_BUDGET_S = 10.0


def budget_seconds() -> float:
    try:
        return max(0.1, float(os.environ.get(BUDGET_ENV, DEFAULT_BUDGET_S)))
    except ValueError:
        return DEFAULT_BUDGET_S


def pass_seconds(run) -> float:
    """Seconds of one image's forward + backward pass on this worker, measured once per run.

    A backward pass costs about two forwards, so 3x a batched forward of 8 images: the fastest of
    the forwards run in 0.2 s (at least 3, at most 50), as the first few calls after loading still pay
    one-off allocations (LeNet-5: 100 ms, then 0.5 ms).
    """
    if run.pass_seconds is None:
        model = inference_model(run)
        x = to_input(np.zeros((8, *run.images.shape[1:]), dtype=np.uint8), run.meta)
        times: list[float] = []
        with torch.no_grad():
            while len(times) < 3 or (sum(times) < 0.2 and len(times) < 50):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
        run.pass_seconds = 3 * min(times) / 8
    return run.pass_seconds


def check_budget(run, settings: Settings) -> float:
    """Refuse (400) a resolved ``settings`` whose estimated cost exceeds the budget, before any work;
    else return that estimate in seconds (the attribution queue's admission uses it)."""
    method = METHODS[settings.method]
    passes = method.passes(settings.params, run.meta)
    budget = budget_seconds()
    estimate = passes * pass_seconds(run)
    if estimate > budget:
        raise ExplainError(f"{method.label} with these settings needs about {passes} passes (~{estimate:.0f} s "
                           f"here), over this server's {budget:.0f} s limit per request; choose cheaper settings")
    return estimate


def on_attribution_thread(run, compute: Callable[[nn.Module], T], estimate: float,
                          keep: Callable[[T], None] | None = None) -> T:
    """``compute(shared model)`` under ``run.lock`` on this process's low-priority attribution thread
    (:mod:`.attribution_queue`: why, and the 503 when it cannot be served within the budget).

    ``keep(result)`` (caching) runs there too, after the lock, so a render that outlives its
    request's wait is still cached for the retry.
    """
    def task() -> T:
        with run.lock:  # Captum hooks the shared model; the page's feature-map probes use it too
            result = compute(shared_model(run))
        if keep is not None:
            keep(result)
        return result

    return attribution_queue().run(task, estimate, budget_seconds())


def warm(run) -> None:
    """Load Captum and ``run``'s model now, so the first attribution a user waits for does not."""
    import captum.attr  # noqa: F401 - the import is the point

    with run.lock:
        shared_model(run)


def unavailable_methods(run) -> dict[str, str]:
    """``{method: reason}`` for the registered methods ``run``'s model does not support (loads the model)."""
    x = to_input(np.zeros(run.images.shape[1:], dtype=np.uint8), run.meta)
    with run.lock:
        model = shared_model(run)
        reasons = {name: unavailable_reason(model, x, name) for name in METHODS}
    return {name: reason for name, reason in reasons.items() if reason}


def predict(run, image, cache=None) -> np.ndarray:
    """Class probabilities float32 ``(K,)`` for one uint8 ``(C, H, W)`` image of ``run`` (a LoadedRun)."""
    key = predict_key(run.meta, image_digest(image))
    k = run.meta["num_classes"]
    if cache is not None:
        blob = cache.get(key)
        if blob is not None and len(blob) == 4 * k:
            return np.frombuffer(blob, dtype=np.float32).copy()
    x = to_input(image, run.meta)
    with torch.no_grad():
        logits = inference_model(run)(x)
    probs = _probabilities(logits)
    if cache is not None:
        cache.set(key, probs.tobytes())
    return probs


def _probabilities(logits: torch.Tensor) -> np.ndarray:
    """Logits ``(1, K)`` -> float32 probabilities ``(K,)``."""
    return np.ascontiguousarray(torch.softmax(logits.float(), 1)[0].numpy(), dtype=np.float32)


def explain_image(run, image, target: Target, settings: Settings, cache=None, signed: bool = False) -> np.ndarray:
    """One map float32 ``(H, W)`` in [0, 1] (or ``signed``, see :func:`attribute`) for uint8 ``image``
    ``(C, H, W)`` of LoadedRun ``run``.

    Checks ``cache`` (a diskcache.Cache or None) first; computing happens on the attribution thread
    (:func:`on_attribution_thread`).
    """
    settings = settings.resolved(run.meta)
    h, w = image.shape[-2:]
    key = cache_key(run.meta, settings, target, image_digest(image), signed)
    if cache is not None:
        blob = cache.get(key)
        if blob is not None and len(blob) == 4 * h * w:
            return np.frombuffer(blob, dtype=np.float32).reshape(h, w).copy()
    estimate = check_budget(run, settings)
    x = to_input(image, run.meta)

    def compute(model: nn.Module) -> np.ndarray:
        return np.ascontiguousarray(attribute(model, x, target, settings, signed)[0], dtype=np.float32)

    def keep(heat: np.ndarray) -> None:
        if cache is not None:
            cache.set(key, heat.tobytes())  # raw bytes, so nothing from disk is ever unpickled

    return on_attribution_thread(run, compute, estimate, keep)


def explain_predicted(run, image, settings: Settings, cache=None) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities (K,), map (H, W))`` for the predicted class of uint8 ``image`` ``(C, H, W)``.

    Grad-CAM of an image not seen before takes a single forward/backward pass through
    :class:`.PredictedLogit`; other methods, or a known image, go through :func:`predict`
    and :func:`explain_image`. Both results land in ``cache`` under their usual keys.
    """
    settings = settings.resolved(run.meta)
    digest = image_digest(image)
    pred_key = predict_key(run.meta, digest)
    if settings.method != "gradcam" or (cache is not None and pred_key in cache):
        probs = predict(run, image, cache)
        return probs, explain_image(run, image, int(probs.argmax()), settings, cache)
    estimate = check_budget(run, settings)
    x = to_input(image, run.meta)

    def compute(model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        wrapper = PredictedLogit(model)
        heat = gradcam_maps(model, settings.layer, x, 0, forward=wrapper)[0].numpy()
        return _probabilities(wrapper.logits), np.ascontiguousarray(heat, dtype=np.float32)

    def keep(result: tuple[np.ndarray, np.ndarray]) -> None:
        if cache is not None:
            probs, heat = result
            cache.set(pred_key, probs.tobytes())
            cache.set(cache_key(run.meta, settings, int(probs.argmax()), digest), heat.tobytes())

    return on_attribution_thread(run, compute, estimate, keep)
