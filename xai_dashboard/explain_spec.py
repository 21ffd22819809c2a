"""What an explanation request may ask for, validated from ``meta.json`` alone, and where results are cached.

No torch here: the dashboard builds its pages, parses API forms and looks up
cached maps with these; :mod:`xai_dashboard.explain` computes the maps. Methods and
their parameters come from the registry in :mod:`.methods`. Cache keys bind a map
to (model fingerprint, method, parameters, layer, target, image).
"""
from __future__ import annotations

import hashlib
import json
from types import MappingProxyType
from typing import Sequence, Union

import numpy as np

from .methods import METHODS, all_params

# Bump when a method's maths changes so old maps are never shown.
# 2: Grad-CAM applies its ReLU at the layer's resolution, before upsampling (Selvaraju et al., Eq. 2).
CACHE_VERSION = 2

Target = Union[int, tuple[int, int]]


class ExplainError(ValueError):
    """A request that cannot be explained; ``status`` is the HTTP code the API answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Settings:
    """How to attribute: a registered ``method``, its ``layer`` (None: the run's ``gradcam_layer``)
    and its integer parameters by name (``Settings("integrated_gradients", ig_steps=64)``).

    Parameters of other registered methods are accepted and dropped by :meth:`resolved`, so a
    page or form may carry every method's inputs; unknown names are refused.
    """

    __slots__ = ("method", "layer", "params")

    def __init__(self, method: str = "gradcam", layer: str | None = None, **params: int):
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "params", MappingProxyType(dict(sorted(params.items()))))

    def __setattr__(self, name, value):
        raise AttributeError("Settings is immutable")

    def _fields(self) -> tuple:
        return self.method, self.layer, tuple(self.params.items())

    def __eq__(self, other) -> bool:
        return isinstance(other, Settings) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"Settings({self.method!r}, layer={self.layer!r}{extra})"

    def resolved(self, meta: dict) -> "Settings":
        """Check the method and its parameters against the registry, fill in defaults and the layer.

        Raises :class:`ExplainError` (400, or 404 for an unknown layer) with a message naming the problem.
        """
        method = METHODS.get(self.method)
        if method is None:
            raise ExplainError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        unknown = sorted(set(self.params) - set(all_params()))
        if unknown:
            raise ExplainError(f"unknown parameter(s) {', '.join(unknown)} for method {self.method!r}")
        params = {p.name: self.params.get(p.name, p.default) for p in method.params}
        for p in method.params:
            problem = p.error(params[p.name])
            if problem:
                raise ExplainError(problem)
        problem = method.check(params, meta) if method.check else None
        if problem:
            raise ExplainError(problem)
        layer = None
        if method.needs_layer:
            layer = self.layer or meta["gradcam_layer"]
            shape = layer_shape(meta, layer)
            if len(shape) != 3:
                raise ExplainError(f"layer {layer!r} has shape {list(shape)}; {method.label} needs a spatial "
                                   f"(channels, height, width) layer such as {meta['gradcam_layer']!r}")
        return Settings(self.method, layer, **params)

    def key(self) -> tuple:
        """What changes a resolved method's result (so caching ignores batch sizes and unused inputs)."""
        method = METHODS[self.method]
        return (self.method, self.layer, tuple((p.name, self.params[p.name]) for p in method.params
                                               if p.affects_output))


def layer_shape(meta: dict, layer: str) -> tuple[int, ...]:
    """Output shape (without batch) of an inspectable layer; unknown layer -> ExplainError 404."""
    for entry in meta["layers"]:
        if entry["name"] == layer:
            return tuple(entry["shape"])
    names = ", ".join(e["name"] for e in meta["layers"])
    raise ExplainError(f"unknown layer {layer!r}; inspectable layers: {names}", status=404)


def spatial_layers(meta: dict) -> list[str]:
    return [e["name"] for e in meta["layers"] if len(e["shape"]) == 3]


def parse_target(spec: str | int | None, class_names: Sequence[str], pred: int,
                 true: int | None = None) -> int:
    """``"pred"`` (default), ``"true"``, a class name or a class index -> class index."""
    if spec is None or spec == "" or spec == "pred":
        return int(pred)
    if spec == "true":
        if true is None:
            raise ExplainError("target 'true' needs a labelled test image; an upload has no true label")
        return int(true)
    if isinstance(spec, str) and spec in class_names:
        return list(class_names).index(spec)
    try:
        index = int(spec)
    except (TypeError, ValueError):
        raise ExplainError(f"unknown target {spec!r}; use pred, true, a class name "
                           f"({', '.join(class_names)}) or an index 0-{len(class_names) - 1}") from None
    if not 0 <= index < len(class_names):
        raise ExplainError(f"target index {index} is outside 0-{len(class_names) - 1}")
    return index


def image_digest(image) -> str:
    """sha256 of a uint8 image's shape and pixels (numpy array or CPU tensor)."""
    arr = np.ascontiguousarray(np.asarray(image))
    return hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()


def model_fingerprint(meta: dict) -> str:
    """sha256 of everything in ``meta.json`` that changes a model's output for a given uint8 image:
    weights, architecture and its arguments, input size, channels, normalisation."""
    fields = [meta[k] for k in ("weights_sha256", "arch", "arch_kwargs", "input_size", "in_channels", "mean", "std")]
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def predict_key(meta: dict, image_sha256: str) -> str:
    """Cache key of one image's class probabilities."""
    return json.dumps([CACHE_VERSION, model_fingerprint(meta), "predict", image_sha256])


def cache_key(meta: dict, settings: Settings, target: Target, image_sha256: str, signed: bool = False) -> str:
    """(model fingerprint, method, params, layer, target, image) of a resolved ``settings``, and for a
    ``signed`` map (:func:`.explain.attribute`) that word: a new checkpoint or other preprocessing
    can never hit old maps."""
    tgt = list(target) if isinstance(target, tuple) else int(target)
    return json.dumps([CACHE_VERSION, model_fingerprint(meta), settings.key(), tgt, image_sha256]
                      + (["signed"] if signed else []))
