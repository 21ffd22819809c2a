"""The stress-test view in headless Chromium (dash_duo), on a copy of the digits demo with a small stress test:
the heatmap draws, a click on a cell lists clean | corrupted pairs whose clean prediction is right and
corrupted prediction wrong, and a pair's Grad-CAMs are one click away."""
from __future__ import annotations

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from test_explain_browser import SLOW, _open_tab, _severe, _wait

from tests.precompute_helpers import demo_copy
from trainer.rundir import load_run
from xai_dashboard.app import create_app
from xai_dashboard.store import RunStore
from xai_dashboard.stress import precompute_stress
from xai_dashboard.stress_file import broken, load_stress

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def stressed_demo(tmp_path_factory):
    run_dir = demo_copy(tmp_path_factory.mktemp("stress-view"), "stress.npz", "gradcam.npz")
    precompute_stress(run_dir, images=60, batch_size=60)
    return run_dir


def _heatmap_rows(dash_duo):
    return dash_duo.driver.execute_script(
        "const g = document.querySelector('#stress-heatmap .js-plotly-plot');"
        "return g && g.data && g.data.length ? g.data[0].y : null;")


def test_click_a_cell_to_see_the_images_it_breaks(dash_duo, stressed_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path))
    data, _ = load_stress(stressed_demo, load_run(stressed_demo).meta)
    # the cell that breaks most images
    name, severity = max(((n, s) for n in data["config"]["corruptions"] for s in range(1, 6)),
                         key=lambda cell: len(broken(data, *cell)))
    expected = len(broken(data, name, severity))
    assert expected > 0
    dash_duo.start_server(create_app(store=RunStore.from_dirs([stressed_demo])))
    dash_duo.wait_for_element("#run-select", timeout=SLOW)
    _open_tab(dash_duo, "Stress test")
    _wait(dash_duo, lambda d: _heatmap_rows(dash_duo), "heatmap never drew")
    names = _heatmap_rows(dash_duo)
    assert names == [*data["config"]["corruptions"], "mean"]
    assert "mean corruption accuracy" in dash_duo.find_element("#stress-summary").text

    point = {"x": str(severity), "y": name, "curveNumber": 0, "pointNumber": [names.index(name), severity - 1]}
    dash_duo.driver.execute_script(
        "document.querySelector('#stress-heatmap .js-plotly-plot').emit('plotly_click', {points: [arguments[0]]});",
        point)
    _wait(dash_duo, lambda d: d.find_elements(By.CSS_SELECTOR, "#stress-pairs .stress-pair"), "no pairs shown")
    pairs = dash_duo.driver.find_elements(By.CSS_SELECTOR, "#stress-pairs .stress-pair")
    assert len(pairs) == min(expected, 24)
    assert f"{expected} images" in dash_duo.find_element("#stress-pairs-title").text
    classes = load_run(stressed_demo).class_names
    for pair in pairs:
        label, clean, corrupted = (int(pair.get_attribute(a)) for a in ("data-label", "data-clean-pred",
                                                                         "data-corrupted-pred"))
        assert clean == label and corrupted != label
        captions = [e.text for e in pair.find_elements(By.CSS_SELECTOR, ".lbl-pred")]
        assert captions == [classes[clean], classes[corrupted]]
        sources = [img.get_attribute("src") for img in pair.find_elements(By.TAG_NAME, "img")]
        assert "/img/" in sources[0] and sources[1].startswith("data:image/png")
    assert len({p.find_elements(By.TAG_NAME, "img")[1].get_attribute("src") for p in pairs}) == len(pairs)

    pairs[0].find_element(By.TAG_NAME, "button").click()
    _wait(dash_duo, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#stress-cam img.stress-cam-overlay")) == 2,
          "no Grad-CAM pair")
    overlays = dash_duo.driver.find_elements(By.CSS_SELECTOR, "#stress-cam img.stress-cam-overlay")
    assert all(o.get_attribute("src").startswith("data:image/png") for o in overlays)
    assert f"#{pairs[0].get_attribute('data-index')}" in dash_duo.find_element("#stress-cam").text
    assert np.unique([o.get_attribute("src") for o in overlays]).size == 2
    assert _severe(dash_duo) == []
