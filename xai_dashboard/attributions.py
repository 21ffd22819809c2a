"""The maths of each registered attribution method (:mod:`.methods`), through Captum.

Each compute function takes ``(model, x, target, settings, signed=False)``: ``x`` normalised
float32 ``(N, C, H, W)``; ``target`` a class index, an ``(N,)`` index tensor or a pair ``(a, b)``
meaning "logit[a] - logit[b]" ("why a rather than b", through :class:`LogitDifference`);
``settings`` resolved. It returns a non-negative ``(N, H, W)`` tensor at the input's
resolution, which :func:`.explain.attribute` normalises to [0, 1]; with ``signed=True`` the same
attributions with their sign kept (+ raises the target's score, − lowers it), un-normalised:

* ``gradcam``               Selvaraju et al. (2017), Eq. 1-2: ReLU(sum_k alpha_k A^k) at the
  layer's own resolution, then bilinearly upsampled (the ReLU comes first: upsampling
  first lets negative evidence bleed into positive pixels). Signed: without the ReLU.
* ``guided_gradcam``        guided backprop x bilinearly upsampled Grad-CAM (Captum's
  GuidedGradCam, which applies the ReLU before upsampling too); |.| summed over channels
  (signed: summed as they are). Defined for ReLU networks only: :func:`guided_backprop_unsupported`.
* ``integrated_gradients``  from a mean-colour baseline (0 after normalisation), |.| summed over
  channels. Signed: summed as they are, so the map adds up to score(x) - score(baseline) (completeness).
* ``saliency``              |d score / d pixel|, max over channels (Simonyan et al.). Signed: the
  gradient summed over channels (the score's change when the pixel brightens).
* ``occlusion``             drop of the score when a ``window`` square is replaced by the mean
  colour, slid by ``stride``, averaged over channels; its positive part (signed: all of it).

Captum hooks the model: the caller holds the run's lock.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode


class LogitDifference(nn.Module):
    """``x -> logit[a] - logit[b]`` as ``(N, 1)``; ``a``/``b`` are ints or ``(N,)`` index tensors."""

    def __init__(self, model: nn.Module, a, b):
        super().__init__()
        self.model, self.a, self.b = model, a, b

    @staticmethod
    def _pick(logits: torch.Tensor, idx) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            return logits.gather(1, idx.view(-1, 1).to(logits.device))
        return logits[:, int(idx)].unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return self._pick(logits, self.a) - self._pick(logits, self.b)


class PredictedLogit(nn.Module):
    """``x -> max over classes of logit`` ``(N, 1)``, keeping the pass's logits in ``self.logits``.

    Its gradient is exactly that of the predicted class's logit, so Grad-CAM for the
    prediction needs no separate forward pass to find out what the prediction is.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        self.logits = logits.detach()
        return logits.max(1, keepdim=True).values


def forward_and_target(model: nn.Module, target) -> tuple[nn.Module, object]:
    """Captum's (forward_func, target) for a class index, a per-image index tensor, or a pair."""
    if isinstance(target, tuple):
        return LogitDifference(model, *target), 0
    return model, target


def gradcam_layer_map(model: nn.Module, layer: str, x: torch.Tensor, target, forward: nn.Module | None = None,
                      relu: bool = True) -> torch.Tensor:
    """Un-normalised Grad-CAM ``(N, H, W)`` for ``x`` ``(N, C, H, W)``: >= 0, or signed without ``relu``.

    ``forward``: a wrapper around ``model`` (such as :class:`PredictedLogit`), ``target`` then
    indexing its output. ``relu_attributions`` applies Eq. 2's ReLU to the ``(N, 1, h, w)``
    layer map; only then is it upsampled.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    forward, tgt = (forward, target) if forward is not None else forward_and_target(model, target)
    cam = LayerGradCam(forward, model.get_submodule(layer)).attribute(x, target=tgt, relu_attributions=relu)
    return LayerAttribution.interpolate(cam.detach(), tuple(x.shape[2:]), interpolate_mode="bilinear")[:, 0]


def gradcam(model: nn.Module, x: torch.Tensor, target, settings, signed: bool = False) -> torch.Tensor:
    return gradcam_layer_map(model, settings.layer, x, target, relu=not signed)


def _channels(attr: torch.Tensor, signed: bool) -> torch.Tensor:
    """``(N, C, H, W)`` attributions -> ``(N, H, W)``: summed over channels, as |.| unless ``signed``."""
    attr = attr.detach()
    return (attr if signed else attr.abs()).sum(1)


def guided_gradcam(model: nn.Module, x: torch.Tensor, target, settings, signed: bool = False) -> torch.Tensor:
    from captum.attr import GuidedGradCam

    forward, tgt = forward_and_target(model, target)
    return _channels(GuidedGradCam(forward, model.get_submodule(settings.layer)).attribute(
        x.detach().requires_grad_(True), target=tgt, interpolate_mode="bilinear"), signed)


def integrated_gradients(model: nn.Module, x: torch.Tensor, target, settings, signed: bool = False
                         ) -> torch.Tensor:
    from captum.attr import IntegratedGradients

    forward, tgt = forward_and_target(model, target)
    return _channels(IntegratedGradients(forward).attribute(
        x.detach().requires_grad_(True), baselines=torch.zeros_like(x), target=tgt,
        n_steps=settings.params["ig_steps"], internal_batch_size=settings.params["internal_batch_size"]), signed)


def saliency(model: nn.Module, x: torch.Tensor, target, settings, signed: bool = False) -> torch.Tensor:
    from captum.attr import Saliency

    forward, tgt = forward_and_target(model, target)
    grad = Saliency(forward).attribute(x.detach().requires_grad_(True), target=tgt, abs=not signed).detach()
    return grad.sum(1) if signed else grad.amax(1)


def occlusion(model: nn.Module, x: torch.Tensor, target, settings, signed: bool = False) -> torch.Tensor:
    from captum.attr import Occlusion

    forward, tgt = forward_and_target(model, target)
    c, window, stride = x.shape[1], settings.params["window"], settings.params["stride"]
    attr = Occlusion(forward).attribute(
        x.detach(), sliding_window_shapes=(c, window, window), strides=(c, stride, stride), baselines=0.0,
        target=tgt, perturbations_per_eval=settings.params["internal_batch_size"]).detach().mean(1)
    return attr if signed else F.relu(attr)


# ------------------------------------------------------------------ where guided backpropagation is defined

# Elementwise nonlinearities other than ReLU, by the name torch dispatches them under.
_OTHER_ACTIVATIONS = frozenset({
    "gelu", "silu", "hardswish", "hardsigmoid", "sigmoid", "tanh", "elu", "selu", "celu", "leaky_relu",
    "prelu", "rrelu", "mish", "softplus", "relu6", "hardtanh", "glu", "logsigmoid", "softsign", "threshold"})


class _ActivationCalls(TorchFunctionMode):
    """Counts the activation functions a forward pass calls, however they are called (module or function)."""

    def __init__(self):
        super().__init__()
        self.calls: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "").rstrip("_")
        if name == "relu" or name in _OTHER_ACTIVATIONS:
            self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


_GUIDED_REASONS: "weakref.WeakKeyDictionary[nn.Module, str | None]" = weakref.WeakKeyDictionary()


def guided_backprop_unsupported(model: nn.Module, x: torch.Tensor) -> str | None:
    """Why guided backpropagation is undefined for ``model``, or None; one probe pass on ``x[:1]``, cached.

    Springenberg et al. (2015) define it for ReLU: the backward pass zeroes negative gradients at
    every ReLU. Captum does that by hooking ``nn.ReLU`` modules, each once per pass, so any other
    activation (GELU, Hardswish, SiLU...), a functional ReLU or a ReLU module applied twice
    (torchvision's ResNet blocks) would silently get the plain gradient.
    """
    if model in _GUIDED_REASONS:
        return _GUIDED_REASONS[model]
    others = sorted({type(m).__name__ for m in model.modules()
                     if type(m).__module__ == "torch.nn.modules.activation" and not isinstance(m, nn.ReLU)})
    reason = f"this model uses {', '.join(others)}" if others else _probe_relu_use(model, x[:1].detach())
    if reason:
        reason = f"guided backpropagation is defined for ReLU networks only (Springenberg et al.); {reason}"
    _GUIDED_REASONS[model] = reason
    return reason


def _probe_relu_use(model: nn.Module, x: torch.Tensor) -> str | None:
    """Run ``model`` once, counting each ``nn.ReLU``'s calls and every activation function called."""
    counts: dict[str, int] = {}

    def counter(name):
        return lambda *_: counts.__setitem__(name, counts.get(name, 0) + 1)

    hooks = [m.register_forward_hook(counter(n)) for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    mode = _ActivationCalls()
    try:
        with torch.no_grad(), mode:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    reused = sorted(n for n, c in counts.items() if c > 1)
    other_fns = sorted(set(mode.calls) - {"relu"})
    if reused:
        return f"the ReLU module {reused[0]!r} is applied {counts[reused[0]]} times per forward pass"
    if other_fns:
        return f"its forward pass calls {', '.join(other_fns)}"
    if mode.calls.get("relu", 0) > sum(counts.values()):
        return "its forward pass applies ReLU as a function, outside nn.ReLU modules"
    return None
