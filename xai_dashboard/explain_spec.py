"""What an explanation request may ask for, validated from ``meta.json`` alone, and where results are cached.

No torch here: the dashboard builds its pages, parses API forms and looks up
cached maps with these; :mod:`xai_dashboard.explain` computes the maps.
Cache keys bind a map to (weights, method, parameters, layer, target, image).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence, Union

import numpy as np

METHODS: dict[str, str] = {
    "gradcam": "Grad-CAM",
    "guided_gradcam": "Guided Grad-CAM",
    "integrated_gradients": "Integrated Gradients",
    "saliency": "Saliency",
    "occlusion": "Occlusion",
}
LAYER_METHODS = ("gradcam", "guided_gradcam")
CACHE_ENV = "XAI_CACHE_DIR"
CACHE_VERSION = 1  # bump when a method's maths changes so old maps are never shown

Target = Union[int, tuple[int, int]]


class ExplainError(ValueError):
    """A request that cannot be explained; ``status`` is the HTTP code the API answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Settings:
    """How to attribute. ``layer`` None means the run's ``gradcam_layer``."""

    method: str = "gradcam"
    layer: str | None = None
    ig_steps: int = 32
    internal_batch_size: int = 32
    window: int = 8
    stride: int = 4

    def resolved(self, meta: dict) -> "Settings":
        """Check the method and ranges, fill in the layer; raises :class:`ExplainError`."""
        if self.method not in METHODS:
            raise ExplainError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        for name, lo, hi in (("ig_steps", 2, 512), ("internal_batch_size", 1, 1024),
                             ("window", 1, meta["input_size"]), ("stride", 1, meta["input_size"])):
            value = getattr(self, name)
            if not isinstance(value, int) or not lo <= value <= hi:
                raise ExplainError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
        layer = self.layer or meta["gradcam_layer"]
        if self.method in LAYER_METHODS:
            shape = layer_shape(meta, layer)
            if len(shape) != 3:
                raise ExplainError(f"layer {layer!r} has shape {list(shape)}; Grad-CAM needs a spatial "
                                   f"(channels, height, width) layer such as {meta['gradcam_layer']!r}")
        return replace(self, layer=layer)

    def key(self) -> tuple:
        """Only the parameters that change this method's result (so caching ignores the rest)."""
        if self.method in LAYER_METHODS:
            return (self.method, self.layer)
        if self.method == "integrated_gradients":
            return (self.method, self.ig_steps)
        if self.method == "occlusion":
            return (self.method, self.window, self.stride)
        return (self.method,)


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


def cache_key(weights_sha256: str, settings: Settings, target: Target, image_sha256: str) -> str:
    """(weights, method, params, layer, target, image): a new checkpoint can never hit old maps."""
    tgt = list(target) if isinstance(target, tuple) else int(target)
    layer = settings.layer if settings.method in LAYER_METHODS else None  # pixel methods ignore it
    return json.dumps([CACHE_VERSION, weights_sha256, settings.key(), layer, tgt, image_sha256])


def cache_dir(directory: str | os.PathLike | None = None) -> Path:
    """``directory``, else ``$XAI_CACHE_DIR``, else ``~/.cache/xai-dashboard/explain``; created 0700."""
    path = Path(directory or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "xai-dashboard" / "explain")
    path = path.expanduser().resolve()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path}: cache folder belongs to another user")
    if st.st_mode & 0o077:
        path.chmod(0o700)  # maps reveal uploaded images: keep them private
    return path


@functools.lru_cache(maxsize=8)
def _open_cache(path: str):
    import diskcache

    return diskcache.Cache(path, size_limit=256 * 2**20)


def explain_cache(directory: str | os.PathLike | None = None):
    """The process's diskcache for maps in :func:`cache_dir` (one handle per folder; thread- and process-safe)."""
    return _open_cache(str(cache_dir(directory)))
