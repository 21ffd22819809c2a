"""Attributions: Grad-CAM against hand and independent computations, sanity checks, hooks,
memory, locking, caching, precompute, feature maps and overlays."""
from __future__ import annotations

import copy
import gc
import os
import shutil
import stat
import threading

import numpy as np
import pytest
import torch
from torch import nn

from tests.test_gradcam_reference import reference_gradcam
from xai_dashboard import attributions, explain, explain_spec, featuremaps, gradcam_file, overlay, precompute
from xai_dashboard.cache import explain_cache
from xai_dashboard.explain_spec import Settings
from xai_dashboard.methods import METHODS

# every registered method, with its cheapest sensible parameters
_CHEAP = {"integrated_gradients": {"ig_steps": 8}, "occlusion": {"window": 8, "stride": 8}}
FAST_METHODS = [(name, _CHEAP.get(name, {})) for name in METHODS]


# ------------------------------------------------------------------ Grad-CAM by hand on a tiny network

class Tiny(nn.Module):
    """x (N, 1, 4, 4) -> conv 2x2 stride 2 -> A (N, 2, 2, 2) -> spatial mean -> linear (3 classes)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=2, stride=2, bias=True)
        self.head = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]], [[[0.0, 1.0], [-1.0, 0.0]]]]))
            self.conv.bias.copy_(torch.tensor([0.0, 0.5]))
            self.head.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0], [-1.0, 0.0]]))

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


X_TINY = torch.tensor([[0.1, 0.9, 0.3, 0.0], [0.4, 0.2, 0.8, 0.5], [0.7, 0.6, 0.1, 0.3], [0.0, 0.2, 0.9, 0.4]])


def hand_gradcam(weights_row: np.ndarray) -> np.ndarray:
    """Grad-CAM for logit = weights_row . mean(A), computed with explicit loops and numbers."""
    x = X_TINY.numpy().astype(np.float64)
    w = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [-1.0, 0.0]])]
    bias = [0.0, 0.5]
    acts = np.zeros((2, 2, 2))
    for k in range(2):
        for p in range(2):
            for q in range(2):
                acts[k, p, q] = (x[2 * p:2 * p + 2, 2 * q:2 * q + 2] * w[k]).sum() + bias[k]
    # d logit / d A_k(p, q) = weights_row[k] / 4 everywhere, so alpha_k (its spatial mean) is the same
    alpha = weights_row / 4.0
    cam = np.maximum(sum(alpha[k] * acts[k] for k in range(2)), 0.0)  # Eq. 2: ReLU at the layer's 2x2
    # bilinear 2 -> 4, half-pixel centres (align_corners=False), edges clamped
    up = np.array([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    big = up @ cam @ up.T
    return big / big.max() if big.max() > 0 else big


@pytest.mark.parametrize("target", [0, 1, 2])
def test_gradcam_matches_hand_computation(target):
    model = Tiny().eval()
    heads = model.head.weight.detach().numpy().astype(np.float64)
    got = explain.gradcam_maps(model, "conv", X_TINY.view(1, 1, 4, 4), target)[0].numpy()
    np.testing.assert_allclose(got, hand_gradcam(heads[target]), atol=1e-6)
    assert explain.hook_count(model) == 0


def test_logit_difference_matches_hand_computation():
    model = Tiny().eval()
    heads = model.head.weight.detach().numpy().astype(np.float64)
    got = explain.gradcam_maps(model, "conv", X_TINY.view(1, 1, 4, 4), (1, 0))[0].numpy()
    np.testing.assert_allclose(got, hand_gradcam(heads[1] - heads[0]), atol=1e-6)
    out = attributions.LogitDifference(model, 1, 0)(X_TINY.view(1, 1, 4, 4))
    logits = model(X_TINY.view(1, 1, 4, 4))
    assert out.shape == (1, 1) and torch.allclose(out[0, 0], logits[0, 1] - logits[0, 0])


def test_batched_targets_equal_single_calls():
    model = Tiny().eval()
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    batched = explain.gradcam_maps(model, "conv", x, torch.tensor([0, 1, 2]))
    for i in range(3):
        torch.testing.assert_close(batched[i], explain.gradcam_maps(model, "conv", x[i:i + 1], i)[0])


# ------------------------------------------------------------------ the full pipeline on a real run

@pytest.fixture(scope="module")
def cifar_run(cifar_store):
    return next(r for r in cifar_store.runs.values() if r.meta["dataset"]["name"] == "cifar10")


@pytest.fixture(scope="module")
def demo_run(demo_store):
    return demo_store.get(None)


def test_pipeline_matches_independent_gradcam(cifar_run):
    run = cifar_run
    layer = run.meta["gradcam_layer"]
    for i in range(6):
        image = run.images[i]
        for target in (int(run.preds[i]), int(run.labels[i]), (i + 3) % run.meta["num_classes"]):
            got = explain.explain_image(run, image, target, Settings(), cache=None)
            with run.lock:
                want = reference_gradcam(run.model(), layer, explain.to_input(image, run.meta),
                                         torch.tensor([target]))[0]
            assert got.shape == tuple(run.images.shape[2:])
            np.testing.assert_allclose(got, want / want.max() if want.max() > 0 else want, atol=1e-4)
    assert explain.hook_count(run.model()) == 0


def _randomised(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in clone.parameters():
            scale = float(p.std()) if p.numel() > 1 and float(p.std()) > 0 else 0.1
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return clone.eval()


@pytest.mark.parametrize("which", ["cifar", "demo"])
def test_randomised_weights_give_a_different_map(which, request):
    from scipy.stats import spearmanr

    run = request.getfixturevalue("cifar_run" if which == "cifar" else "demo_run")
    model, layer = run.model(), run.meta["gradcam_layer"]
    random_model = _randomised(model)
    rhos = []
    for i in range(12):
        x = explain.to_input(run.images[i], run.meta)
        target = int(run.preds[i])
        with run.lock:
            trained = explain.gradcam_maps(model, layer, x, target)[0].numpy().ravel()
        rand = explain.gradcam_maps(random_model, layer, x, target)[0].numpy().ravel()
        if trained.std() > 0 and rand.std() > 0:  # an all-zero map has no rank correlation: leave it out
            rhos.append(spearmanr(trained, rand)[0])
    assert len(rhos) >= 6 and np.mean(rhos) < 0.5, rhos


# ------------------------------------------------------------------ hooks, memory, locking

def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def test_200_attributions_leave_no_hooks_and_flat_memory(demo_run):
    run = demo_run
    model = run.model()
    settings = [Settings(method=m, **kw) for m, kw in FAST_METHODS]
    n = len(run.labels)

    def one(i):
        explain.explain_image(run, run.images[i % n], int(run.preds[i % n]), settings[i % len(settings)])
        assert explain.hook_count(model) == 0, f"hooks left after {settings[i % len(settings)].method}"

    for i in range(20):  # warm-up: allocator pools, Captum imports
        one(i)
    gc.collect()
    before = _rss()
    for i in range(200):
        one(i)
    gc.collect()
    growth = (_rss() - before) / before
    assert growth < 0.10, f"RSS grew {growth:.1%}"
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks


def test_hooks_removed_when_attribution_fails(demo_run):
    model = demo_run.model()
    x = explain.to_input(demo_run.images[0], demo_run.meta)
    for method, kw in FAST_METHODS:
        s = Settings(method=method, **kw).resolved(demo_run.meta)
        with demo_run.lock, pytest.raises((IndexError, RuntimeError)):
            explain.attribute(model, x, 99, s)  # no class 99: fails mid-attribution
        assert explain.hook_count(model) == 0, method
    with demo_run.lock, pytest.raises(RuntimeError):
        featuremaps.probe_layer(model, x[:, :, :2, :2], demo_run.meta["gradcam_layer"])  # too small an image
    assert explain.hook_count(model) == 0


def test_attribution_waits_for_the_run_lock(demo_run):
    done = threading.Event()
    image = demo_run.images[5]
    worker = threading.Thread(target=lambda: (explain.explain_image(demo_run, image, 1, Settings()), done.set()))
    with demo_run.lock:
        worker.start()
        assert not done.wait(0.5), "attribution ran while another request held the model"
    worker.join(10)
    assert done.is_set()


def test_concurrent_attributions_equal_sequential(demo_run):
    from concurrent.futures import ThreadPoolExecutor

    from xai_dashboard.attribution_queue import SERVER_THREADS

    run = demo_run
    jobs = [(i, Settings(method=m, **kw)) for i in range(8) for m, kw in FAST_METHODS[:3]]
    sequential = [explain.explain_image(run, run.images[i], int(run.preds[i]), s) for i, s in jobs]
    with ThreadPoolExecutor(SERVER_THREADS) as pool:  # as many at once as the attribution queue admits
        concurrent = list(pool.map(lambda job: explain.explain_image(
            run, run.images[job[0]], int(run.preds[job[0]]), job[1]), jobs))
    for a, b in zip(sequential, concurrent):
        np.testing.assert_array_equal(a, b)
    assert explain.hook_count(run.model()) == 0


# ------------------------------------------------------------------ all methods, settings, targets

@pytest.mark.parametrize("method,kw", FAST_METHODS)
def test_every_method_gives_a_normalised_map(demo_run, method, kw):
    heat = explain.explain_image(demo_run, demo_run.images[3], (int(demo_run.preds[3]), 0), Settings(method, **kw))
    assert heat.shape == (32, 32) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() <= 1 and np.isfinite(heat).all()


def test_settings_validation(demo_run):
    meta = demo_run.meta
    assert Settings().resolved(meta).layer == meta["gradcam_layer"]
    with pytest.raises(explain_spec.ExplainError) as e:
        Settings(method="lime").resolved(meta)
    assert e.value.status == 400
    with pytest.raises(explain_spec.ExplainError) as e:
        Settings(layer="nope").resolved(meta)
    assert e.value.status == 404
    with pytest.raises(explain_spec.ExplainError, match="spatial"):
        Settings(layer="classifier.fc1").resolved(meta)
    with pytest.raises(explain_spec.ExplainError, match="ig_steps"):
        Settings(method="integrated_gradients", ig_steps=0).resolved(meta)
    with pytest.raises(explain_spec.ExplainError, match="unknown parameter"):
        Settings(method="saliency", n_samples=3).resolved(meta)
    # pixel methods ignore the layer; another method's parameters are dropped; batch sizes are not in the key
    assert Settings(method="saliency", layer="classifier.fc1", window=3).resolved(meta).key() == ("saliency", None, ())
    ig = Settings(method="integrated_gradients", ig_steps=16, internal_batch_size=4).resolved(meta)
    assert ig.params == {"ig_steps": 16, "internal_batch_size": 4}
    assert ig.key() == ("integrated_gradients", None, (("ig_steps", 16),))


def test_parse_target():
    names = ["cat", "dog", "bird"]
    assert explain_spec.parse_target(None, names, pred=2) == 2
    assert explain_spec.parse_target("pred", names, pred=2) == 2
    assert explain_spec.parse_target("true", names, pred=2, true=0) == 0
    assert explain_spec.parse_target("dog", names, pred=2) == 1
    assert explain_spec.parse_target("0", names, pred=2) == 0
    for bad in ("true", "3", "-1", "horse"):
        with pytest.raises(explain_spec.ExplainError):
            explain_spec.parse_target(bad, names, pred=2)


# ------------------------------------------------------------------ cache

def test_cache_hits_and_keys(demo_run, tmp_path, monkeypatch):
    cache = explain_cache(tmp_path / "c")
    assert stat.S_IMODE(os.stat(tmp_path / "c").st_mode) == 0o700
    image = demo_run.images[7]
    first = explain.explain_image(demo_run, image, 2, Settings(), cache)
    monkeypatch.setattr(explain, "attribute", lambda *a, **k: pytest.fail("cache miss"))
    np.testing.assert_array_equal(explain.explain_image(demo_run, image, 2, Settings(), cache), first)
    s = Settings().resolved(demo_run.meta)
    digest = explain_spec.image_digest(image)
    meta = demo_run.meta
    other_prep = [{**meta, "weights_sha256": "0" * 64}, {**meta, "mean": [0.4]}, {**meta, "std": [0.2]},
                  {**meta, "arch": "simple_cnn"}, {**meta, "input_size": 64}, {**meta, "in_channels": 3}]
    keys = {explain_spec.cache_key(meta, s, 2, digest),
            explain_spec.cache_key(meta, s, 3, digest),
            explain_spec.cache_key(meta, s, (2, 3), digest),
            explain_spec.cache_key(meta, Settings(method="saliency").resolved(meta), 2, digest),
            explain_spec.cache_key(meta, s, 2, explain_spec.image_digest(demo_run.images[8]))}
    keys |= {explain_spec.cache_key(m, s, 2, digest) for m in other_prep}
    assert len(keys) == 5 + len(other_prep)
    # probabilities too: the same weights under other preprocessing are another model
    assert len({explain_spec.predict_key(m, digest) for m in [meta, *other_prep]}) == 1 + len(other_prep)


def test_one_pass_prediction_and_gradcam(demo_run, tmp_path, monkeypatch):
    cache = explain_cache(tmp_path / "one-pass")
    for i in range(4):
        image = demo_run.images[i]
        probs, heat = explain.explain_predicted(demo_run, image, Settings(), cache)
        np.testing.assert_allclose(probs, explain.predict(demo_run, image), atol=1e-6)
        np.testing.assert_array_equal(heat, explain.explain_image(demo_run, image, int(probs.argmax()), Settings()))
    monkeypatch.setattr(explain, "attribute", lambda *a, **k: pytest.fail("cache miss"))
    monkeypatch.setattr(explain, "gradcam_maps", lambda *a, **k: pytest.fail("cache miss"))
    again = explain.explain_predicted(demo_run, demo_run.images[0], Settings(), cache)  # both now cached
    np.testing.assert_array_equal(again[1], explain.explain_image(demo_run, demo_run.images[0], int(again[0].argmax()),
                                                              Settings(), cache))
    assert explain.hook_count(demo_run.model()) == 0


# ------------------------------------------------------------------ precompute

def test_precompute_matches_live_maps_and_is_bound_to_weights(demo_store, tmp_path):
    from xai_dashboard.cli import main as cli_main

    run = demo_store.get(None)
    run_dir = tmp_path / "digits-demo"
    shutil.copytree(run.run.path, run_dir)
    assert cli_main(["precompute", "gradcam", str(run_dir), "--batch-size", "64"]) == 0
    # the store's run points at the repo copy: point a shallow copy at the precomputed dir
    local = copy.copy(run)
    local.run = copy.copy(run.run)
    local.run.path = run_dir
    data = gradcam_file.load_precomputed(local)
    assert data["pred"].shape == data["true"].shape == (len(run.labels), 32, 32) and data["pred"].dtype == np.float16
    wrong = np.flatnonzero(run.preds != run.labels)
    right = np.flatnonzero(run.preds == run.labels)
    for i in list(wrong[:3]) + list(right[:3]):
        for key, target in (("pred", run.preds[i]), ("true", run.labels[i])):
            live = explain.explain_image(run, run.images[i], int(target), Settings())
            np.testing.assert_allclose(data[key][i].astype(np.float32), live, atol=2e-3)
    np.testing.assert_array_equal(data["pred"][right], data["true"][right])

    i = int(wrong[0]) if len(wrong) else 0
    assert gradcam_file.precomputed_map(local, i, int(run.labels[i])) is not None
    other = next(c for c in range(10) if c not in (int(run.labels[i]), int(run.preds[i])))
    assert gradcam_file.precomputed_map(local, i, other) is None  # not stored: computed live instead
    assert gradcam_file.precomputed_problem(local) is None
    local.run.meta = {**run.meta, "weights_sha256": "f" * 64}  # a new checkpoint: the file is stale
    assert gradcam_file.load_precomputed(local) is None
    problem = gradcam_file.precomputed_problem(local)
    assert problem.startswith("gradcam.npz: computed for weights") and "xai-dashboard precompute gradcam" in problem


def test_precompute_cli_refuses_a_bad_run_and_names_it(tmp_path, capsys):
    from xai_dashboard.cli import main as cli_main

    assert cli_main(["precompute", "gradcam", str(tmp_path / "nothing")]) == 1
    assert "nothing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["precompute", "lime", str(tmp_path)])  # only registered derived files


def test_precompute_progress_and_given_images(demo_store, tmp_path):
    run = demo_store.get(None)
    run_dir = tmp_path / "run"
    shutil.copytree(run.run.path, run_dir)
    calls = []
    precompute.precompute_gradcam(run_dir, images=run.images, labels=run.labels, batch_size=100,
                                  progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] and all(a[0] < b[0] for a, b in zip(calls, calls[1:]))


# ------------------------------------------------------------------ feature maps

def test_probe_layer_shapes_and_contributions(demo_run):
    run = demo_run
    model = run.model()
    x = explain.to_input(run.images[0], run.meta)
    for entry in run.meta["layers"]:
        with run.lock:
            probe = featuremaps.probe_layer(model, x, entry["name"])
        assert probe.activation.shape == tuple(entry["shape"])
        assert probe.contribution.shape == (entry["shape"][0],)
        assert probe.target == int(run.preds[0])
    assert explain.hook_count(model) == 0
    # the last dense layer feeds the linear head directly: grad x activation sums to logit - bias
    last = run.meta["layers"][-1]["name"]
    with run.lock:
        probe = featuremaps.probe_layer(model, x, last, target=4)
        with torch.no_grad():
            logit = model(x)[0, 4].item()
    assert isinstance(model.head, nn.Linear)  # LeNet-5: classifier.fc2 is embed(x), the head is linear
    assert probe.contribution.sum() == pytest.approx(logit - model.head.bias[4].item(), abs=1e-4)


def test_feature_figures(demo_run):
    run = demo_run
    x = explain.to_input(run.images[1], run.meta)
    with run.lock:
        spatial = featuremaps.probe_layer(run.model(), x, "features.block2")
        dense = featuremaps.probe_layer(run.model(), x, "classifier.fc1")
    top = featuremaps.contribution_channels(spatial, 4)
    assert set(top) == set(np.argsort(-np.abs(spatial.contribution))[:4])
    assert list(spatial.contribution[top]) == sorted(spatial.contribution[top], reverse=True)
    grid = featuremaps.channel_grid_figure(spatial, top)
    z = np.array(grid.data[0].z, dtype=float)
    assert grid.data[0].zmin == pytest.approx(float(spatial.activation[top].min()))  # one shared colour scale
    assert np.isnan(z).any() and np.nanmax(z) == pytest.approx(float(spatial.activation[top].max()))
    assert featuremaps.vector_figure(dense).data[0].type == "bar"
    assert len(featuremaps.contribution_figure(dense, "3").data[0].x) == 16
    name, conv = featuremaps.first_conv(run.model())
    tiles = featuremaps.filter_tiles(conv.weight)
    assert tiles.shape == (conv.out_channels, *conv.kernel_size, 3) and tiles.dtype == np.uint8
    assert featuremaps.filters_figure(name, conv.weight).data[0].type == "image"


def test_mosaic_layout():
    maps = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    values, which = featuremaps.mosaic(maps)
    assert values.shape == (2 * 3 - 1, 3 * 4 - 1)  # 3 columns, 2 rows, 1-pixel gaps
    np.testing.assert_array_equal(values[3:5, 4:7], maps[4])
    assert (which[np.isnan(values)] == -1).all()


# ------------------------------------------------------------------ overlay

def test_overlay_rendering():
    image = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    heat = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    plain = overlay.overlay_array(image, heat, alpha=0.0)
    assert plain.shape == (256, 256, 3)
    np.testing.assert_array_equal(plain[::8, ::8], image.transpose(1, 2, 0))  # nearest-neighbour upscale
    full = overlay.overlay_array(image, np.ones_like(heat), alpha=1.0)
    assert (full == overlay.colormap_lut()[255]).all()
    grey = overlay.overlay_array(image[:1], heat, alpha=0.5, size=300)
    assert grey.shape == (300, 300, 3)
    png = overlay.overlay_png(image, heat)
    assert png.startswith(b"\x89PNG") and overlay.data_url(png).startswith("data:image/png;base64,")


# ------------------------------------------------------------------ methods a run's model does not support

def test_page_disables_guided_gradcam_where_undefined(cifar_store, demo_run):
    from xai_dashboard.views.explain_model import method_options

    for run in [*cifar_store.runs.values(), demo_run]:
        options = {o["value"]: o for o in method_options(explain.unavailable_methods(run))}
        guided = options["guided_gradcam"]
        if run.meta["arch"] == "fast":  # GELU
            assert guided["disabled"] and "GELU" in guided["title"] and "not for this model" in guided["label"]
            with pytest.raises(explain_spec.ExplainError, match="GELU") as e:
                explain.explain_image(run, run.images[0], 0, Settings("guided_gradcam"))
            assert e.value.status == 400
        else:
            assert not guided["disabled"], (run.name, guided)
        assert not any(o["disabled"] for name, o in options.items() if name != "guided_gradcam")
