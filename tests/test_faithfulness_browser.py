"""The faithfulness card in headless Chromium (dash_duo): a test image's map, "Score this map" ->
the AUCs, baselines, ROAD, verdict and the curves appear beside the overlay."""
from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from test_explain_browser import SLOW, _severe, _src, _wait, explain_page  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser


def _text(dash_duo, selector: str) -> str:
    found = dash_duo.driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


def test_scores_and_curves_appear_next_to_the_map(explain_page):
    dash_duo, run = explain_page
    _wait(dash_duo, lambda d: "Score this map" in _text(dash_duo, "#xp-faith-scores"),
          "no prompt: the card must compute nothing before the button")
    dash_duo.driver.find_element(By.ID, "xp-faith-run").click()
    _wait(dash_duo, lambda d: "Verdict:" in _text(dash_duo, "#xp-faith-scores"), "no faithfulness scores")
    text = _text(dash_duo, "#xp-faith-scores")
    for words in ("Deletion AUC", "Insertion AUC", "ROAD MoRF / LeRF", "lower is better", "higher is better",
                  "random (5x5-upsampled)", "edge"):
        assert words in text
    traces = "return document.querySelector('#xp-faith-curves .js-plotly-plot').data.map(t => t.name)"
    _wait(dash_duo, lambda d: d.find_elements(By.CSS_SELECTOR, "#xp-faith-curves .js-plotly-plot"), "no curves")
    assert dash_duo.driver.execute_script(traces) == [
        "deletion, this map", "deletion, random", "insertion, this map", "insertion, random"]
    # the card sits in the same card as the overlay it scores
    overlay = dash_duo.driver.find_element(By.ID, "gradcam-overlay")
    card = overlay.find_element(By.XPATH, "./ancestor::div[@class='card']")
    assert card.find_elements(By.ID, "xp-faith-curves")
    assert _src(dash_duo, "#gradcam-overlay").startswith("data:image/png")
    # the run's scoreboard (digits-demo ships scoreboard.npz): one sortable row per method
    card.find_element(By.XPATH, ".//summary[starts-with(normalize-space(), 'Scoreboard')]").click()
    _wait(dash_duo, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#xp-board-grid .ag-center-cols-container .ag-row"))
          == 5, "scoreboard rows missing")
    assert "Grad-CAM" in _text(dash_duo, "#xp-board-grid") and "test images stratified" in _text(
        dash_duo, "#xp-board-note")
    assert _severe(dash_duo) == []
