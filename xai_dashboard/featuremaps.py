"""Feature maps of one layer for one image, channel contributions, first-layer filters.

A :class:`LayerProbe` holds a layer's activation for one image (``(K, h, w)``
for a convolutional layer, ``(D,)`` for a dense one) and each channel's
contribution to the target logit, ``sum over h, w of grad x activation`` (the
first-order share of the logit that flows through that channel). Figures are
plotly; the channel grid is a single heatmap mosaic so that all channels share
one colour scale and even 256 channels render quickly.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import plotly.graph_objects as go
import torch
from torch import nn

DEFAULT_TOP = 16


@dataclass(frozen=True)
class LayerProbe:
    layer: str
    activation: np.ndarray    # float32 (K, h, w) or (D,)
    contribution: np.ndarray  # float32 (K,) or (D,)
    target: int               # the class whose logit ``contribution`` explains

    @property
    def spatial(self) -> bool:
        return self.activation.ndim == 3


@contextmanager
def capture_output(module: nn.Module, into: dict) -> Iterator[None]:
    """Store ``module``'s forward output in ``into["out"]``; the hook is removed even on error."""
    handle = module.register_forward_hook(lambda _m, _i, out: into.__setitem__("out", out))
    try:
        yield
    finally:
        handle.remove()


def probe_layer(model: nn.Module, x: torch.Tensor, layer: str, target: int | None = None) -> LayerProbe:
    """Activation and per-channel grad x activation of ``layer`` for normalised ``x`` ``(1, C, H, W)``.

    ``target`` None means the predicted class. The caller holds the model's lock.
    """
    store: dict = {}
    with torch.enable_grad(), capture_output(model.get_submodule(layer), store):
        logits = model(x)
    act = store["out"]
    if not isinstance(act, torch.Tensor):
        raise TypeError(f"layer {layer!r} returns {type(act).__name__}, not a tensor")
    target = int(logits[0].argmax()) if target is None else int(target)
    grad, = torch.autograd.grad(logits[0, target], act)
    contrib = (grad * act).detach()[0]
    if contrib.dim() > 1:
        contrib = contrib.flatten(1).sum(1)
    return LayerProbe(layer, act.detach()[0].float().numpy(), contrib.float().numpy(), target)


def top_channels(probe: LayerProbe, k: int | None = DEFAULT_TOP) -> np.ndarray:
    """Channel indices by mean activation, highest first; ``k`` None -> all of them."""
    act = probe.activation
    means = act.reshape(len(act), -1).mean(1)
    order = np.argsort(-means, kind="stable")
    return order if k is None else order[:k]


def mosaic(maps: np.ndarray, cols: int | None = None, gap: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(M, h, w)`` -> ``(values, which)``: tiles on a grid separated by NaN rows/columns,
    and the tile index of every pixel (-1 in the gaps)."""
    m, h, w = maps.shape
    cols = cols or max(1, math.ceil(math.sqrt(m)))
    rows = max(1, math.ceil(m / cols))
    values = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan, dtype=np.float32)
    which = np.full(values.shape, -1, dtype=np.int32)
    for i in range(m):
        r, c = divmod(i, cols)
        values[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = maps[i]
        which[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = i
    return values, which


def _image_axes(fig: go.Figure) -> go.Figure:
    fig.update_xaxes(visible=False, constrain="domain")
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    return fig


def channel_grid_figure(probe: LayerProbe, channels: np.ndarray, title: str = "") -> go.Figure:
    """Heatmap mosaic of ``probe``'s ``channels`` with one shared colour scale; hover names the channel."""
    channels = np.asarray(channels, dtype=np.int64)
    values, which = mosaic(probe.activation[channels])
    labels = np.where(which >= 0, channels[np.maximum(which, 0)], -1)
    fig = go.Figure(go.Heatmap(
        z=values, customdata=labels, colorscale="Viridis", hoverongaps=False,
        zmin=float(np.nanmin(values)), zmax=float(np.nanmax(values)),
        hovertemplate="channel %{customdata}<br>activation %{z:.3f}<extra></extra>",
        colorbar=dict(title="act.", thickness=12)))
    fig.update_layout(title=title or f"{probe.layer}: {len(channels)} of {len(probe.activation)} channels",
                      margin=dict(l=10, r=10, t=40, b=10), height=420)
    return _image_axes(fig)


def vector_figure(probe: LayerProbe, title: str = "") -> go.Figure:
    """Bar chart of a non-spatial (dense) layer's activations ``(D,)``."""
    act = probe.activation
    fig = go.Figure(go.Bar(x=np.arange(len(act)), y=act, marker_color="#4c78a8",
                           hovertemplate="unit %{x}<br>activation %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title or f"{probe.layer}: {len(act)} activations", height=320,
                      margin=dict(l=40, r=10, t=40, b=30), xaxis_title="unit", yaxis_title="activation")
    return fig


def contribution_figure(probe: LayerProbe, class_name: str, k: int = DEFAULT_TOP) -> go.Figure:
    """The ``k`` channels with the largest |grad x activation| for the target logit, signed."""
    c = probe.contribution
    idx = np.argsort(-np.abs(c), kind="stable")[:k]
    idx = idx[np.argsort(-c[idx], kind="stable")]
    unit = "channel" if probe.spatial else "unit"
    fig = go.Figure(go.Bar(
        x=[f"{unit} {i}" for i in idx], y=c[idx],
        marker_color=["#2a9d8f" if v >= 0 else "#e76f51" for v in c[idx]],
        hovertemplate="%{x}<br>grad×activation %{y:.4f}<extra></extra>"))
    fig.update_layout(title=f"{unit}s contributing most to logit '{class_name}'", height=320,
                      margin=dict(l=40, r=10, t=40, b=60), yaxis_title="grad × activation")
    return fig


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first ``nn.Conv2d`` in registration order (the layer that sees pixels), or None."""
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def filter_tiles(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    """Conv weights ``(K, C, kh, kw)`` -> uint8 RGB tiles ``(K, kh, kw, 3)``, each min-max scaled on its own.

    One or three input channels are shown as grey or colour; any other count as the channel mean.
    """
    w = weight.detach().float().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight, np.float32)
    if w.shape[1] != 3:
        w = np.repeat(w.mean(1, keepdims=True), 3, axis=1)
    lo = w.reshape(len(w), -1).min(1)[:, None, None, None]
    hi = w.reshape(len(w), -1).max(1)[:, None, None, None]
    scaled = (w - lo) / np.where(hi - lo > 1e-12, hi - lo, 1.0)
    return np.rint(scaled.transpose(0, 2, 3, 1) * 255).astype(np.uint8)


def filters_figure(name: str, weight: torch.Tensor, tile_px: int = 24) -> go.Figure:
    """Small RGB tiles of a first convolution's learned filters (each scaled to its own range)."""
    tiles = filter_tiles(weight)
    k, kh, kw, _ = tiles.shape
    scale = max(1, tile_px // max(kh, kw))
    big = tiles.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest-neighbour: keep pixels crisp
    cols = min(k, 16)
    rows = math.ceil(k / cols)
    th, tw = big.shape[1:3]
    canvas = np.full((rows * (th + 2) - 2, cols * (tw + 2) - 2, 3), 255, dtype=np.uint8)
    for i in range(k):
        r, c = divmod(i, cols)
        canvas[r * (th + 2): r * (th + 2) + th, c * (tw + 2): c * (tw + 2) + tw] = big[i]
    fig = go.Figure(go.Image(z=canvas, hoverinfo="skip"))
    fig.update_layout(title=f"{name}: {k} learned filters {kh}×{kw}", height=80 + rows * (th + 2) * 1.2,
                      margin=dict(l=10, r=10, t=40, b=10))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig
