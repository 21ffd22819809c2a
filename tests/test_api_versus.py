"""``/api/explain`` with ``versus`` ("why A rather than B"): the signed difference map the Explanations
page draws, checked against Grad-CAM of logit[a] - logit[b] before the ReLU (Selvaraju et al. 2017,
Eq. 1-2 without the ReLU) computed by plain torch hooks, and against the difference of the two
classes' signed occlusion maps (occlusion is linear in the score it perturbs)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_api import png_of, post

from xai_dashboard import explain
from xai_dashboard.cache import explain_cache
from xai_dashboard.explain_spec import Settings
from xai_dashboard.overlay import overlay_array

A, B = 3, 5
IMAGE = 4  # digits-demo test image


@pytest.fixture(scope="module")
def client_and_cache(demo_store, tmp_path_factory):
    from xai_dashboard.app import create_app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XAI_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield create_app(store=demo_store).server.test_client(), explain_cache()


def difference_cam(model: torch.nn.Module, layer: str, x: torch.Tensor, a: int, b: int) -> np.ndarray:
    """sum_k alpha_k A^k for the score y_a - y_b, no ReLU, upsampled bilinearly: ``(H, W)`` float64."""
    module, saved = model.get_submodule(layer), {}
    fh = module.register_forward_hook(lambda m, i, o: saved.__setitem__("A", o.detach()))
    bh = module.register_full_backward_hook(lambda m, gi, go: saved.__setitem__("dA", go[0].detach()))
    try:
        y = model(x.detach().clone().requires_grad_(True))
        (y[0, a] - y[0, b]).backward()
    finally:
        fh.remove()
        bh.remove()
    model.zero_grad(set_to_none=True)
    act, grad = saved["A"].double(), saved["dA"].double()
    cam = (grad.mean(dim=(2, 3), keepdim=True) * act).sum(1, keepdim=True)
    return F.interpolate(cam, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)[0, 0].numpy()


def test_gradcam_versus_is_the_signed_logit_difference_map(client_and_cache, demo_store):
    client, cache = client_and_cache
    run = demo_store.get(None)
    image = run.images[IMAGE]
    # the old relative map of the same pair, already cached: the signed answer must not be served from it
    relative = explain.explain_image(run, image, (A, B), Settings(), cache)
    r = post(client, "/api/explain", png_of(image), target=str(A), versus=str(B), format="json")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    heat = np.array(body["heatmap"], dtype=np.float64)
    want = difference_cam(run.model(), run.meta["gradcam_layer"], explain.to_input(image, run.meta), A, B)
    assert want.min() < 0 < want.max()  # both signs: a [0, 1] map cannot match it
    assert body["signed"] is True and body["target"]["index"] == [A, B]
    np.testing.assert_allclose(heat, want, atol=1e-4 * np.abs(want).max())
    assert not np.allclose(heat, relative)
    single = post(client, "/api/explain", png_of(image), target=str(A), format="json").get_json()
    assert single["signed"] is False and 0 <= np.min(single["heatmap"]) <= np.max(single["heatmap"]) <= 1


def test_occlusion_versus_is_the_difference_of_the_signed_class_maps(client_and_cache, demo_store):
    client, cache = client_and_cache
    run = demo_store.get(None)
    image = run.images[IMAGE]
    settings = Settings(method="occlusion")
    want = (explain.explain_image(run, image, A, settings, None, signed=True)
            - explain.explain_image(run, image, B, settings, None, signed=True))
    body = post(client, "/api/explain", png_of(image), method="occlusion", target=str(A), versus=str(B),
                format="json").get_json()
    heat = np.array(body["heatmap"])
    assert body["signed"] is True and np.abs(want).max() > 0
    np.testing.assert_allclose(heat, want, atol=1e-4 * np.abs(want).max())


def test_png_of_a_difference_map_uses_the_diverging_scale(client_and_cache, demo_store):
    client, _ = client_and_cache
    run = demo_store.get(None)
    image = run.images[IMAGE]
    r = post(client, "/api/explain", png_of(image), target=str(A), versus=str(B), size="64")
    assert r.status_code == 200 and r.mimetype == "image/png" and r.headers["X-Signed"] == "1"
    heat = explain.explain_image(run, image, (A, B), Settings(), None, signed=True)
    got = np.asarray(Image.open(io.BytesIO(r.data)).convert("RGB"))
    np.testing.assert_array_equal(got, overlay_array(image, heat, 0.5, 64, signed=True))
    assert not np.array_equal(got, overlay_array(image, explain.explain_image(run, image, (A, B), Settings()),
                                                 0.5, 64))
    plain = post(client, "/api/explain", png_of(image), target=str(A), size="64")
    assert plain.headers["X-Signed"] == "0"
