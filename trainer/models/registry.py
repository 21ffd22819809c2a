"""The one model registry: ``@register_model`` and ``create_model``.

Every network in the zoo is a :class:`ZooModel`: ``embed(x)`` maps an image
batch ``(N, C, H, W)`` to the penultimate features ``(N, D)`` and ``head``
maps those to logits ``(N, num_classes)``. Each model names the layer Grad-CAM
should use by default and the layers a user may inspect in the dashboard.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

__all__ = [
    "ZooModel", "ModelSpec", "register_model", "create_model", "list_models",
    "get_spec", "layer_shapes", "UnknownModelError",
]


class UnknownModelError(KeyError):
    """Raised for a model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class ZooModel(nn.Module):
    """Base class: ``forward(x) = head(embed(x))``.

    Subclasses set ``gradcam_layer`` (a dotted module name, usually the last
    convolutional block) and ``inspect_layers`` (dotted names shown in the
    dashboard's layer selector), and implement ``embed``.
    """

    gradcam_layer: str = ""
    inspect_layers: tuple[str, ...] = ()
    head: nn.Module

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float -> ``(N, D)`` penultimate features."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., ZooModel]
    description: str
    default_input_size: int | None  # None: any size the dataset gives


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, *, description: str = "", input_size: int | None = None):
    """Class or factory decorator that adds a model under ``name``.

    The builder is called as ``builder(num_classes=..., in_channels=..., **kwargs)``.
    """

    def deco(builder):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = description or (builder.__doc__ or "").strip().splitlines()[0:1]
        _REGISTRY[name] = ModelSpec(
            name, builder, doc if isinstance(doc, str) else "".join(doc), input_size
        )
        return builder

    return deco


def list_models() -> list[str]:
    _import_families()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    _import_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; valid names: {', '.join(sorted(_REGISTRY))}"
        ) from None


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs) -> ZooModel:
    """Build a fresh, randomly initialised model from the registry."""
    model = get_spec(name).builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    if not isinstance(model, ZooModel):
        raise TypeError(f"builder for {name!r} returned {type(model).__name__}, not a ZooModel")
    model.get_submodule(model.gradcam_layer)  # fails loudly on a typo in a family file
    return model


@contextmanager
def _forward_hooks(model: nn.Module, names: list[str], store: dict) -> Iterator[None]:
    handles = []
    try:
        for name in names:
            def hook(_m, _i, out, name=name):
                store[name] = tuple(out.shape[1:])
            handles.append(model.get_submodule(name).register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def layer_shapes(model: ZooModel, in_channels: int, input_size: int) -> list[tuple[str, tuple[int, ...]]]:
    """``[(layer name, output shape without batch)]`` for ``inspect_layers``.

    Runs one dummy forward pass in eval mode; hooks are removed even on error.
    """
    names = list(model.inspect_layers)
    if model.gradcam_layer not in names:
        names.append(model.gradcam_layer)
    shapes: dict[str, tuple[int, ...]] = {}
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        x = torch.zeros(1, in_channels, input_size, input_size, device=p.device)
        with torch.no_grad(), _forward_hooks(model, names, shapes):
            model(x)
    finally:
        model.train(was_training)
    return [(n, shapes[n]) for n in names]


def _import_families() -> None:
    # Importing the package registers every family exactly once.
    from trainer import models  # noqa: F401
