"""Readable explanations (issue 14): signed maps keep sign and magnitude on a diverging scale centred
on zero, every map has a colour bar, captions are in words, controls a method ignores are disabled
with the reason, and an image's detail exports its overlay (PNG) and raw map (.npy)."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_callback_inputs import DEMO, body, client_and_deps, post, twin_store  # noqa: F401
from xai_dashboard import explain
from xai_dashboard.explain_spec import Settings
from xai_dashboard.methods import METHODS, draws_signed
from xai_dashboard.overlay import overlay_array
from xai_dashboard.views.explain_model import Controls, build_panel, ignored_because


def _rgb(colour: str) -> np.ndarray:
    return np.array([float(v) for v in colour[colour.index("(") + 1:-1].split(",")])


def _mistake(run) -> int:
    return int(np.flatnonzero(run.preds != run.labels)[0])


def test_a_signed_map_keeps_its_sign_on_a_diverging_scale_centred_on_zero(demo_store):
    run = demo_store.get(None)
    i = _mistake(run)
    panel = build_panel(demo_store, {"kind": "test", "run": run.name, "index": i},
                        Controls("integrated_gradients", "pred"))
    heat = panel.overlay.heat
    assert panel.overlay.signed and heat.min() < 0 < heat.max()  # IG before absolute values has both signs
    bar = panel.overlay.colorbar().data[0]
    assert bar.zmid == 0 and bar.zmin == -bar.zmax and bar.zmax == pytest.approx(float(np.abs(heat).max()))
    low, mid, high = (_rgb(c) for c in (bar.colorscale[0][1], bar.colorscale[len(bar.colorscale) // 2][1],
                                         bar.colorscale[-1][1]))
    assert low[2] > low[0] and high[0] > high[2] and mid.min() > 200  # blue, (near) white, red
    assert f"+ for {run.class_names[int(run.preds[i])]}" in bar.colorbar.title.text
    # The signed map is Integrated Gradients as published: it adds up to score(x) - score(baseline)
    # (completeness, Sundararajan et al. 2017), here with the mean-colour baseline (0 once normalised).
    x = explain.to_input(run.images[i], run.meta)
    with torch.no_grad():
        logits = run.inference_model()(torch.cat([x, torch.zeros_like(x)]))
    pred = int(run.preds[i])
    assert heat.sum() == pytest.approx(float(logits[0, pred] - logits[1, pred]), rel=0.01)


def test_a_relative_map_has_a_zero_to_one_colour_bar(demo_store):
    panel = build_panel(demo_store, {"kind": "test", "run": DEMO, "index": 3}, Controls("saliency", "pred"))
    assert not panel.overlay.signed and panel.overlay.heat.min() >= 0 and panel.overlay.heat.max() == 1
    bar = panel.overlay.colorbar().data[0]
    assert (bar.zmin, bar.zmax, bar.zmid) == (0, 1, None) and "relative" in bar.colorbar.title.text


def test_why_a_rather_than_b_is_signed_for_every_method(demo_store):
    """The logit-difference map is drawn signed whatever the method; for Grad-CAM it is the map before
    Eq. 2's ReLU, which is linear in the score: map(a - b) = map(a) - map(b)."""
    run = demo_store.get(None)
    assert all(draws_signed(m, (1, 2)) for m in METHODS)
    assert [m for m in METHODS if draws_signed(m, 1)] == [m for m, spec in METHODS.items() if spec.signed]
    i = _mistake(run)
    pred, true = int(run.preds[i]), int(run.labels[i])
    tiles = build_panel(demo_store, {"kind": "test", "run": DEMO, "index": i}, Controls("gradcam", "pred")).contrast
    assert [t.signed for t in tiles] == [False, False, True]
    pair = tiles[2].heat
    a, b = (explain.explain_image(run, run.images[i], t, Settings(), signed=True) for t in (pred, true))
    np.testing.assert_allclose(pair, a - b, atol=1e-5 * float(np.abs(pair).max()))
    assert pair.min() < 0 < pair.max()
    assert tiles[2].colorbar(160, horizontal=True).data[0].zmid == 0


def test_signed_overlay_colours_follow_sign_and_magnitude():
    """Red where the map is positive, blue where negative, the image untouched at zero, and a larger
    |a| more strongly coloured than a smaller one of the same sign."""
    image = np.full((3, 4, 4), 128, np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[:, 0], heat[:, 3], heat[0, 1] = -2.0, 1.0, 2.0  # column 1 row 0: the positive peak
    rgb = overlay_array(image, heat, alpha=0.5, size=4, signed=True).astype(int)
    assert (rgb[:, 0, 2] > rgb[:, 0, 0] + 50).all()          # negative: blue
    assert (rgb[:, 3, 0] > rgb[:, 3, 2] + 30).all()          # positive: red
    assert (rgb[1:, 1:3] == 128).all()                       # zero: the image as it is
    peak, half = rgb[0, 1], rgb[1, 3]
    assert peak[0] - peak[2] > half[0] - half[2]             # |2| more saturated than |1|


@pytest.mark.parametrize("method, target, words", [
    ("gradcam", "pred", "Grad-CAM for the predicted class, {pred}"),
    ("saliency", "true", "Saliency for the true class, {true}"),
    ("occlusion", "other", "Occlusion for class {other}, {other_name}"),
    ("occlusion", "true-index", "Occlusion for class {t}, {true} (the true class)"),
    ("gradcam", "contrast", "Grad-CAM: why {pred} rather than {true}"),
])
def test_captions_are_in_words(demo_store, method, target, words):
    run = demo_store.get(None)
    i = _mistake(run)
    names = run.class_names
    other = next(k for k in range(len(names)) if k not in (run.preds[i], run.labels[i]))
    target = {"other": str(other), "true-index": str(run.labels[i])}.get(target, target)
    panel = build_panel(demo_store, {"kind": "test", "run": DEMO, "index": i}, Controls(method, target))
    assert panel.error == ""
    assert panel.overlay.caption == words.format(pred=names[run.preds[i]], true=names[run.labels[i]], other=other,
                                                 other_name=names[other], t=run.labels[i])
    assert [t.caption for t in panel.contrast] == [
        f"{METHODS[method].label} for the predicted class, {names[run.preds[i]]}",
        f"{METHODS[method].label} for the true class, {names[run.labels[i]]}",
        f"{METHODS[method].label}: why {names[run.preds[i]]} rather than {names[run.labels[i]]}"]


def test_controls_a_method_ignores_say_why():
    for name, method in METHODS.items():
        why = ignored_because(name)
        assert ("layer" in why) == (not method.needs_layer)
        assert not set(why) & {p.name for p in method.params}
    assert ignored_because("saliency")["layer"] == \
        "Saliency does not use a layer: it attributes the input pixels directly"
    assert ignored_because("gradcam")["ig_steps"] == "IG steps is used by Integrated Gradients only, not by Grad-CAM"


def _download(response) -> tuple[bytes, str]:
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    out = response.get_json()["response"]
    data = next(v["data"] for v in out.values() if "data" in v)
    return (base64.b64decode(data["content"]) if data["base64"] else data["content"].encode()), data["filename"]


def _dep(deps, output_prefix: str) -> dict:
    return next(d for d in deps if d["output"].lstrip(".").startswith(output_prefix))


def test_the_detail_exports_its_overlay_and_raw_map(client_and_deps, twin_store):  # noqa: F811
    app, client, deps = client_and_deps
    run = twin_store.get(DEMO)
    i = _mistake(run)
    pred, true = int(run.preds[i]), int(run.labels[i])
    names = run.class_names
    override = {("selected-image", "data"): {"run": DEMO, "index": i},
                ("xp-detail-method", "value"): "integrated_gradients", ("xp-detail-target", "value"): "contrast"}
    dep = _dep(deps, "xp-detail-download")
    stem = f"{DEMO}_test{i}_integrated_gradients_{names[pred]}-vs-{names[true]}"
    raw, name = _download(post(client, body(dep, "errors", override, "xp-detail-export-npy.n_clicks")))
    assert name == f"{stem}.npy"
    heat = np.load(io.BytesIO(raw), allow_pickle=False)
    assert heat.dtype == np.float32 and heat.shape == tuple(run.images.shape[2:])
    want = explain.explain_image(run, run.images[i], (pred, true), Settings("integrated_gradients"), signed=True)
    np.testing.assert_allclose(heat, want, rtol=1e-5, atol=1e-7)  # the signed map, not rescaled
    png, name = _download(post(client, body(dep, "errors", override, "xp-detail-export-png.n_clicks")))
    assert name == f"{stem}.png" and Image.open(io.BytesIO(png)).size == (256, 256)
    # a bad request is answered in words in the card, with no file
    bad = post(client, body(dep, "errors", {**override, ("xp-detail-method", "value"): "bogus"},
                            "xp-detail-export-npy.n_clicks"))
    assert bad.status_code == 200 and "'bogus'" in bad.get_data(as_text=True)
    assert "data" not in bad.get_json()["response"].get("xp-detail-download", {})


@pytest.mark.browser
def test_saliency_disables_the_layer_and_ig_draws_a_centred_colour_bar(dash_duo, demo_store, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from xai_dashboard.app import create_app

    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    dash_duo.start_server(create_app(store=demo_store))
    dash_duo.wait_for_element("#run-select", timeout=60)
    dash_duo.driver.find_element(By.XPATH, "//*[contains(@class, 'tab') and normalize-space()='Explanations']").click()
    wait = WebDriverWait(dash_duo.driver, 60)
    wait.until(lambda d: "Grad-CAM for the predicted class" in d.find_element(By.ID, "xp-overlay-caption").text)
    assert dash_duo.find_element("#xp-cam-layer-field").get_attribute("title") == ""
    assert dash_duo.find_element("#xp-cam-layer").is_enabled()  # Grad-CAM reads it
    dash_duo.select_dcc_dropdown("#xp-method", value="Saliency")
    wait.until(lambda d: d.find_element(By.ID, "xp-cam-layer-field").get_attribute("title")
               == "Saliency does not use a layer: it attributes the input pixels directly")
    assert not dash_duo.find_element("#xp-cam-layer").is_enabled()  # Dash's dropdown is a <button disabled>
    wait.until(lambda d: d.find_element(By.ID, "xp-overlay-caption").text.startswith("Saliency for the predicted"))
    dash_duo.select_dcc_dropdown("#xp-method", index=list(METHODS).index("integrated_gradients"))
    wait.until(lambda d: d.find_element(By.ID, "xp-overlay-caption").text.startswith("Integrated Gradients for"))
    trace = "return document.querySelector('#xp-overlay-scale .js-plotly-plot').data[0]"
    wait.until(lambda d: d.execute_script(trace + ".zmid") == 0)
    zmin, zmax = dash_duo.driver.execute_script(f"const t = ({trace.removeprefix('return ')}); return [t.zmin, t.zmax]")
    assert zmin == -zmax and zmax > 0
    assert not dash_duo.find_element("#xp-param-ig_steps").get_attribute("disabled")
    assert dash_duo.find_element("#xp-param-window").get_attribute("disabled")
    assert [e for e in (dash_duo.get_logs() or []) if e.get("level") == "SEVERE"] == []
