"""The all-channel feature-map view as Chromium draws it (dash_duo): every one of cifar10-fast's 256
channels labelled, each tile at least MIN_TILE_PX on screen, the figure not clipped by its card."""
from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from xai_dashboard.app import create_app
from xai_dashboard.featuremaps import MIN_TILE_PX

pytestmark = pytest.mark.browser
SLOW = 60  # seconds: the first callbacks import Captum and load the model
LAYER = "blocks.block2"  # (256, 7, 7)
GRID = "document.querySelector('#xp-fm-grid .js-plotly-plot')"


def test_all_channels_drawn_large_and_labelled(dash_duo, cifar_dir, tmp_path, monkeypatch):
    from xai_dashboard.store import RunStore

    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    store = RunStore.from_dirs([Path(__file__).resolve().parents[1] / "checkpoints" / "cifar10-fast"],
                               str(cifar_dir))
    run = store.get(None)
    dash_duo.start_server(create_app(store=store))
    dash_duo.wait_for_element("#run-select", timeout=SLOW)
    dash_duo.driver.find_element(By.XPATH, "//*[contains(@class, 'tab') and normalize-space()='Explanations']").click()
    dash_duo.wait_for_element("#layer-select", timeout=SLOW)
    names = [e["name"] for e in run.meta["layers"]]
    dash_duo.select_dcc_dropdown("#layer-select", index=names.index(LAYER))
    box = dash_duo.driver.find_element(By.CSS_SELECTOR, "#xp-fm-all input")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)  # not under a header
    box.click()
    WebDriverWait(dash_duo.driver, SLOW).until(
        lambda d: "all 256 channels" in (d.execute_script(f"return {GRID}?.layout?.title?.text") or ""),
        message="the all-channel view never drew")
    xlen, xrange, ylen, yrange, labels, box, height = dash_duo.driver.execute_script(
        f"const g = {GRID}, f = g._fullLayout; return [f.xaxis._length, f.xaxis.range, f.yaxis._length,"
        " f.yaxis.range, g.querySelectorAll('.annotation-text').length,"
        " document.querySelector('#xp-fm-grid').getBoundingClientRect().height, f.height];")
    assert labels == 256
    px_x, px_y = xlen / abs(xrange[1] - xrange[0]), ylen / abs(yrange[1] - yrange[0])  # screen px per map pixel
    assert min(px_x, px_y) * 7 >= MIN_TILE_PX - 0.5  # 7x7 maps; half a pixel of rounding
    assert box >= height > 1500  # the card grows with the figure instead of clipping it
    assert [e for e in (dash_duo.get_logs() or []) if e.get("level") == "SEVERE"] == []
