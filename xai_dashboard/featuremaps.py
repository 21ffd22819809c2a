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


def channel_name(i: int) -> str:
    """How a channel is named both on its grid tile and in the contribution chart, so one can be found
    from the other."""
    return f"ch {i}"


def contribution_channels(probe: LayerProbe, k: int = DEFAULT_TOP) -> np.ndarray:
    """The ``k`` channels with the largest |grad x activation|, most positive contribution first."""
    c = probe.contribution
    idx = np.argsort(-np.abs(c), kind="stable")[:k]
    return idx[np.argsort(-c[idx], kind="stable")]


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


# Screen size of one tile. Every channel of a 256-channel layer is drawn at no less than MIN_TILE_PX
# on a fixed 8-column grid (about 660 px wide); the figure grows taller with the rows and the page
# scrolls, rather than squeezing 256 tiles into one fixed-height plot where each is a few pixels wide.
MIN_TILE_PX = 56
FEW_TILE_PX = 96   # up to 16 tiles: larger
LABEL_PX = 14      # band above each tile for its channel name
_MARGIN = dict(l=10, r=80, t=40, b=10)  # r: room for the colour bar


def channel_grid_figure(probe: LayerProbe, channels: np.ndarray, title: str = "") -> go.Figure:
    """Heatmap mosaic of ``probe``'s ``channels`` (activation ``(K, h, w)``) with one shared colour scale,
    each tile labelled with :func:`channel_name`; the figure's pixel size keeps every tile
    :data:`MIN_TILE_PX` or more on screen."""
    channels = np.asarray(channels, dtype=np.int64)
    _, h, w = probe.activation.shape
    few = len(channels) <= DEFAULT_TOP
    cols = min(len(channels), 4 if few else 8)
    scale = (FEW_TILE_PX if few else MIN_TILE_PX) / max(h, w)  # screen px per activation pixel
    gap = math.ceil(LABEL_PX / scale)  # in activation pixels, so the label band is LABEL_PX on screen
    values, which = mosaic(probe.activation[channels], cols, gap)
    labels = np.where(which >= 0, channels[np.maximum(which, 0)], -1)
    rows_px, cols_px = values.shape[0] + gap, values.shape[1]  # + gap: the first row's label band
    fig = go.Figure(go.Heatmap(
        z=values, customdata=labels, colorscale="Viridis", hoverongaps=False,
        zmin=float(np.nanmin(values)), zmax=float(np.nanmax(values)),
        hovertemplate="channel %{customdata}<br>activation %{z:.3f}<extra></extra>",
        # a fixed-length colour bar at the top: a tall all-channel figure would stretch it off screen
        colorbar=dict(title="act.", thickness=12, lenmode="pixels", len=min(360, rows_px * scale),
                      y=1, yanchor="top")))
    for i, ch in enumerate(channels):  # name above the tile, in the band the gap leaves
        r, c = divmod(i, cols)
        fig.add_annotation(x=c * (w + gap) + (w - 1) / 2, y=r * (h + gap) - 0.5, text=channel_name(int(ch)),
                           showarrow=False, yanchor="bottom", font=dict(size=10))
    fig.update_layout(title=title or f"{probe.layer}: {len(channels)} of {len(probe.activation)} channels",
                      margin=_MARGIN, height=math.ceil(rows_px * scale) + _MARGIN["t"] + _MARGIN["b"],
                      width=math.ceil(cols_px * scale) + _MARGIN["l"] + _MARGIN["r"])
    fig.update_xaxes(visible=False, range=[-0.5, cols_px - 0.5], constrain="domain")
    fig.update_yaxes(visible=False, range=[values.shape[0] - 0.5, -0.5 - gap], scaleanchor="x")
    return fig


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
    idx = contribution_channels(probe, k)
    unit = "channel" if probe.spatial else "unit"
    fig = go.Figure(go.Bar(
        x=[channel_name(i) if probe.spatial else f"unit {i}" for i in idx], y=c[idx],
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


WHITENING_NOTE = ("Fixed, not learned: PCA-whitening filters of 2×2 RGB patches (eigenvectors of the patch "
                  "covariance of training images, scaled by 1/√eigenvalue) and their negatives; "
                  "only the bias trains.")


def is_whitening(weight: torch.Tensor | np.ndarray) -> bool:
    """Whether conv weights ``(K, C, kh, kw)`` are a whitening bank ``[F; -F]`` as trainer/models/fast.py
    builds it: F's ``C*kh*kw`` rows are eigenvectors of a covariance scaled by 1/sqrt(eigenvalue), so they
    are mutually orthogonal (F F^T diagonal); learned filters are neither mirrored nor orthogonal."""
    w = weight.detach().double().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight, np.float64)
    w = w.reshape(len(w), -1)
    half = len(w) // 2
    if len(w) != 2 * w.shape[1] or not np.allclose(w[half:], -w[:half]):
        return False
    gram = w[:half] @ w[:half].T
    norms = np.sqrt(np.outer(np.diag(gram), np.diag(gram)))
    return bool(np.all(np.abs(gram - np.diag(np.diag(gram))) <= 1e-3 * norms))


def filters_figure(name: str, weight: torch.Tensor, tile_px: int = 24) -> go.Figure:
    """Small RGB tiles of a first convolution's filters ``(K, C, kh, kw)`` (each scaled to its own range);
    a fixed whitening bank (:func:`is_whitening`) is said to be one, with :data:`WHITENING_NOTE`."""
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
    if is_whitening(weight):
        title, top = f"{name}: {k} fixed whitening filters {kh}×{kw}<br><sup>{WHITENING_NOTE}</sup>", 60
    else:
        title, top = f"{name}: {k} learned filters {kh}×{kw}", 40
    fig.update_layout(title=title, height=top + 40 + rows * (th + 2) * 1.2, margin=dict(l=10, r=10, t=top, b=10))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig
