"""Feature-map figures are readable: tiles named like the contribution chart, large enough when all
256 channels are shown, and cifar10-fast's fixed whitening filters said to be what they are."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.rundir import load_run
from xai_dashboard import featuremaps
from xai_dashboard.views.explain_model import build_feature_view

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


@pytest.fixture(scope="module")
def fast_model():
    return load_run(CHECKPOINTS / "cifar10-fast").load_model("cpu")


def _synthetic_input() -> torch.Tensor:
    """A fixed normalised 32x32 RGB input ``(1, 3, 32, 32)``: feature-map layout needs no real image."""
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _tile_labels(fig) -> list[tuple[int, int]]:
    """``(channel named by the label, channel whose pixels lie just below it)`` for every label."""
    heat = fig.data[0]
    drawn = np.array(heat.customdata)
    out = []
    for a in fig.layout.annotations:
        named = int(re.fullmatch(r"ch (\d+)", a.text).group(1))
        row, col = int(round(a.y + 0.5)), int(round(a.x))  # the tile's first row, under the label
        out.append((named, int(drawn[row, col])))
    return out


def test_every_tile_is_labelled_with_the_channel_drawn(demo_store):
    run = demo_store.get(None)
    view = build_feature_view(demo_store, {"kind": "test", "run": run.name, "index": 3}, "features.block2", False)
    labels = _tile_labels(view.grid)
    drawn = set(np.unique(np.array(view.grid.data[0].customdata))) - {-1}
    assert len(labels) == len(drawn)  # one label per tile
    assert all(named == under for named, under in labels)
    assert {n for n, _ in labels} == drawn
    # every channel the contribution chart names is found, under the same name, in the grid
    assert set(view.contrib.data[0].x) <= {a.text for a in view.grid.layout.annotations}
    assert len(view.contrib.data[0].x) == len(labels)


@pytest.mark.parametrize("layer", ["whiten", "blocks.block2", "blocks.block3"])
def test_all_channel_view_keeps_tiles_large(fast_model, layer):
    probe = featuremaps.probe_layer(fast_model, _synthetic_input(), layer)
    k, h, w = probe.activation.shape
    fig = featuremaps.channel_grid_figure(probe, np.arange(k))
    labels = _tile_labels(fig)
    assert sorted(n for n, _ in labels) == list(range(k)) and all(n == u for n, u in labels)
    lay = fig.layout
    xspan = abs(lay.xaxis.range[1] - lay.xaxis.range[0])
    yspan = abs(lay.yaxis.range[1] - lay.yaxis.range[0])
    px_x = (lay.width - lay.margin.l - lay.margin.r) / xspan  # screen px per activation pixel
    px_y = (lay.height - lay.margin.t - lay.margin.b) / yspan
    assert px_x == pytest.approx(px_y, rel=0.02)  # equal aspect needs no shrinking to fit
    assert min(px_x * w, px_y * h) >= featuremaps.MIN_TILE_PX >= 48
    if k == 256:
        assert lay.height > 1500  # the figure grows with the rows; the card scrolls


def test_whitening_filters_are_explained(fast_model, demo_store):
    name, conv = featuremaps.first_conv(fast_model)
    fig = featuremaps.filters_figure(name, conv.weight)
    assert featuremaps.WHITENING_NOTE in fig.layout.title.text and "not learned" in featuremaps.WHITENING_NOTE
    plain_name, plain = featuremaps.first_conv(demo_store.get(None).model())
    plain_fig = featuremaps.filters_figure(plain_name, plain.weight)
    assert "not learned" not in plain_fig.layout.title.text and "learned filters" in plain_fig.layout.title.text
    # a mirrored bank [F; -F] of random, non-orthogonal filters is not a whitening bank
    f = torch.randn(12, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    assert not featuremaps.is_whitening(torch.cat([f, -f]))


def test_whitening_note_is_true_of_the_shipped_filters(fast_model, cifar_dir):
    """Independent check of the note: the first half of the filters maps 2x2 patches of normalised
    training images to (nearly) uncorrelated outputs, i.e. they whiten the patch covariance."""
    meta = load_run(CHECKPOINTS / "cifar10-fast").meta
    x = np.load(cifar_dir / "cifar10_train.npz")["x"][:2000]
    images = torch.as_tensor(x).permute(0, 3, 1, 2).float() / 255
    images = (images - torch.tensor(meta["mean"])[:, None, None]) / torch.tensor(meta["std"])[:, None, None]
    weight = fast_model.whiten.weight.detach().float()
    out = torch.nn.functional.conv2d(images, weight[:12].contiguous())  # (N, 12, 31, 31), no bias
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12).double()
    corr = torch.corrcoef(flat.T)
    assert (corr - torch.eye(12, dtype=torch.float64)).abs().max() < 0.1
    assert torch.equal(weight[12:], -weight[:12]) and not fast_model.whiten.weight.requires_grad
