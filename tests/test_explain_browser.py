"""The explanations in headless Chromium (dash_duo): gallery image -> overlay, layer -> feature
maps, PNG upload -> prediction and overlay, random bytes -> error message."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.support.ui import WebDriverWait

from xai_dashboard.app import create_app

pytestmark = pytest.mark.browser
SLOW = 60  # seconds: the first callbacks import Captum and load the model


def _open_tab(dash_duo, title: str) -> None:
    dash_duo.driver.find_element(By.XPATH, f"//*[contains(@class, 'tab') and normalize-space()='{title}']").click()


def _wait(dash_duo, predicate, what: str, timeout: float = SLOW):
    # An element the page redraws between finding and reading it is "not yet", not a failure.
    return WebDriverWait(dash_duo.driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: predicate(d), message=what)


def _src(dash_duo, selector: str) -> str:
    found = dash_duo.driver.find_elements(By.CSS_SELECTOR, selector)
    return (found[0].get_attribute("src") or "") if found else ""


def _severe(dash_duo) -> list:
    return [e for e in (dash_duo.get_logs() or []) if e.get("level") == "SEVERE"]


@pytest.fixture
def explain_page(dash_duo, demo_store, tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    dash_duo.start_server(create_app(store=demo_store))
    dash_duo.wait_for_element("#run-select", timeout=SLOW)
    _open_tab(dash_duo, "Explanations")
    dash_duo.wait_for_element("#upload-image", timeout=SLOW)
    _wait(dash_duo, lambda d: _src(dash_duo, "#gradcam-overlay").startswith("data:image/png"),
          "first overlay never drew")
    return dash_duo, demo_store.get(None)


def _upload(dash_duo, path) -> None:
    dash_duo.driver.find_element(By.CSS_SELECTOR, "#upload-image input[type=file]").send_keys(str(path))


def first_gallery_image(dash_duo, store):
    """Start the app on ``store``, open the gallery: ``(its first thumbnail, that image's test index)``."""
    dash_duo.start_server(create_app(store=store))
    dash_duo.wait_for_element("#run-select", timeout=SLOW)
    _open_tab(dash_duo, "Confusion & gallery")
    _wait(dash_duo, lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery .gallery-item"), "gallery is empty")
    item = dash_duo.driver.find_elements(By.CSS_SELECTOR, "#gallery .gallery-item")[0]
    return item, int(item.get_attribute("data-index"))


def test_gallery_image_shows_its_overlay(dash_duo, demo_store, tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    item, index = first_gallery_image(dash_duo, demo_store)
    item.click()
    _wait(dash_duo, lambda d: _src(dash_duo, "#detail-explain #xp-detail-overlay").startswith("data:image/png"),
          "no Grad-CAM overlay in the image detail")
    first = _src(dash_duo, "#xp-detail-overlay")
    dash_duo.driver.find_element(By.XPATH, "//*[@id='xp-detail-target']//label[normalize-space()='true']").click()
    _wait(dash_duo, lambda d: "true class" in d.find_element(By.ID, "xp-detail-caption").text,
          "target switch did nothing")
    run = demo_store.get(None)
    assert run.preds[index] != run.labels[index]  # the default gallery lists mistakes
    _wait(dash_duo, lambda d: _src(dash_duo, "#xp-detail-overlay") != first, "true-class map equals predicted map")
    # the explanations tab follows the selection
    _open_tab(dash_duo, "Explanations")
    _wait(dash_duo, lambda d: f"#{index}" in d.find_element(By.ID, "xp-source-label").text,
          "explanations tab did not follow the gallery selection")
    assert _severe(dash_duo) == []


def test_layer_select_shows_feature_maps(explain_page):
    dash_duo, run = explain_page
    for i, entry in enumerate(run.meta["layers"]):
        dash_duo.select_dcc_dropdown("#layer-select", index=i)  # options follow meta["layers"]
        title = "return document.querySelector('#xp-fm-grid .js-plotly-plot').layout.title.text"
        _wait(dash_duo, lambda d: entry["name"] in (d.execute_script(title) or ""), f"no maps for {entry['name']}")
        kind = dash_duo.driver.execute_script(
            "return document.querySelector('#xp-fm-grid .js-plotly-plot').data[0].type")
        assert kind == ("heatmap" if len(entry["shape"]) == 3 else "bar")
    assert dash_duo.driver.execute_script(
        "return document.querySelector('#xp-filters .js-plotly-plot').data[0].type") == "image"
    assert _severe(dash_duo) == []


def test_png_upload_shows_prediction_and_overlay(explain_page, tmp_path):
    dash_duo, run = explain_page
    i = int(np.flatnonzero(run.preds == run.labels)[3])
    path = tmp_path / "digit.png"
    Image.fromarray(run.images[i][0]).resize((96, 96), Image.Resampling.NEAREST).save(path)
    before = _src(dash_duo, "#gradcam-overlay")
    _upload(dash_duo, path)
    _wait(dash_duo, lambda d: "Upload: digit.png" in d.find_element(By.ID, "xp-source-label").text, "upload ignored")
    _wait(dash_duo, lambda d: _src(dash_duo, "#gradcam-overlay") not in ("", before), "overlay did not change")
    label = dash_duo.find_element("#prediction-label").text
    assert label.startswith(f"Predicted: {run.class_names[int(run.preds[i])]} ")
    overlay = dash_duo.find_element("#gradcam-overlay")
    assert overlay.size["width"] >= 256
    assert dash_duo.find_element("#upload-error").text == ""
    assert _severe(dash_duo) == []


def test_random_bytes_upload_shows_an_error(explain_page, tmp_path):
    dash_duo, _run = explain_page
    before = _src(dash_duo, "#gradcam-overlay")
    path = tmp_path / "<b>noise.png"
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    _upload(dash_duo, path)
    dash_duo.wait_for_contains_text("#upload-error", "not a PNG, JPEG or WebP image", timeout=SLOW)
    assert "<b>noise.png" in dash_duo.find_element("#upload-error").text  # the name shown as text
    assert not dash_duo.driver.find_elements(By.CSS_SELECTOR, "#upload-error b")
    assert _src(dash_duo, "#gradcam-overlay") == before  # the page keeps working
    assert _severe(dash_duo) == []


def test_files_the_upload_widget_refuses_get_a_message(explain_page, tmp_path):
    """dcc.Upload drops these in the browser (max_size, accept): the page still says why."""
    dash_duo, _run = explain_page
    big = tmp_path / "huge.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (11 * 2**20))
    _upload(dash_duo, big)
    dash_duo.wait_for_contains_text("#upload-error", "huge.png: the file is 11.0 MB; the limit is 10.0 MB",
                                    timeout=SLOW)
    svg = tmp_path / "drawing.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')
    _upload(dash_duo, svg)
    dash_duo.wait_for_contains_text("#upload-error", "drawing.svg: unsupported file type", timeout=SLOW)
    assert _severe(dash_duo) == []


def test_switching_runs_follows_the_new_run(dash_duo, mixed_store, tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    dash_duo.start_server(create_app(store=mixed_store))
    dash_duo.wait_for_element("#run-select", timeout=SLOW)
    _open_tab(dash_duo, "Explanations")
    _wait(dash_duo, lambda d: _src(dash_duo, "#gradcam-overlay").startswith("data:image/png"), "no overlay")
    note = lambda d: d.find_element(By.ID, "xp-method-note").text  # noqa: E731
    if mixed_store.get(None).meta["arch"] == "fast":  # GELU: guided backpropagation is undefined, and the page says so
        _wait(dash_duo, lambda d: "Guided Grad-CAM is unavailable" in note(d) and "GELU" in note(d), "no reason shown")
    other = next(n for n in mixed_store.names if n != mixed_store.default)
    run = mixed_store.get(other)
    before = _src(dash_duo, "#gradcam-overlay")
    dash_duo.select_dcc_dropdown("#run-select", value=other)
    true_name = run.class_names[int(run.labels[0])]
    _wait(dash_duo, lambda d: f"(true class: {true_name})" in d.find_element(By.ID, "xp-source-label").text
          and _src(dash_duo, "#gradcam-overlay") not in ("", before), "explanation did not follow the run switch")
    title = "return document.querySelector('#xp-fm-grid .js-plotly-plot').layout.title.text"
    _wait(dash_duo, lambda d: run.meta["gradcam_layer"] in (d.execute_script(title) or ""), "feature maps stale")
    assert dash_duo.find_element("#prediction-label").text.startswith(
        f"Predicted: {run.class_names[int(run.preds[0])]} ")
    _wait(dash_duo, lambda d: note(d) == "", "the ReLU run's methods are still marked unavailable")  # LeNet-5
    assert _severe(dash_duo) == []
