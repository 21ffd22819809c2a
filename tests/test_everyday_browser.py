"""Everyday use in headless Chromium at 1600 x 1000 (dash_duo): a cell click brings its gallery into view
and outlines the cell, a link reopens the same view after a reload and the back button goes back, the
CSV of a cell's images, the keyboard in the gallery, a failing callback says so in its card, every chart's
mode bar saves a PNG at report resolution, and "Compare runs" opens an image's detail.

The digits demo stands in where it can; paging needs more than one page of a cell, so the keyboard test
uses ``test_dashboard_browser.py``'s two-class run of 500 cats."""
from __future__ import annotations

import csv
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.test_dashboard_browser import cat_dog_store  # noqa: F401 - the fixture
from xai_dashboard import analysis
from xai_dashboard.app import create_app

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")]
ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "checkpoints" / "digits-demo"
SLOW = 60
ERRORS_TAB = "//*[contains(@class, 'tab') and normalize-space()='Confusion & gallery']"


def _wait(dash_duo, predicate, what: str, timeout: float = SLOW):
    return WebDriverWait(dash_duo.driver, timeout, ignored_exceptions=(Exception,)).until(
        lambda d: predicate(d), message=what)


def _severe(dash_duo) -> list:
    return [e for e in (dash_duo.get_logs() or []) if e.get("level") == "SEVERE"]


def _start(dash_duo, store, query: str = "") -> None:
    dash_duo.start_server(create_app(store=store))
    dash_duo.driver.set_window_size(1600, 1000)
    if query:
        dash_duo.driver.get(dash_duo.server_url + "/" + query)
    dash_duo.wait_for_element("#run-select", timeout=SLOW)


def _query(dash_duo) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(dash_duo.driver.current_url).query).items()}


def _matrix_drawn(dash_duo) -> bool:
    return dash_duo.driver.execute_script(
        "const g = document.querySelector('#confusion-matrix .js-plotly-plot');"
        "return !!(g && g.data && g.data.length)")


def _click_cell(dash_duo, names, t: int, p: int) -> None:
    """The heatmap's plotly_click as a real click fires it (dcc.Graph turns it into clickData)."""
    point = {"x": names[p], "y": names[t], "curveNumber": 0, "pointNumber": [t, p], "pointIndex": [t, p]}
    dash_duo.driver.execute_script(
        "document.querySelector('#confusion-matrix .js-plotly-plot').emit('plotly_click', {points: [arguments[0]]});",
        point)


def _in_view(dash_duo, selector: str) -> bool:
    """The element's top edge and at least 100 px of it lie inside the window."""
    return dash_duo.driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return r.top >= 0 && r.top + Math.min(r.height, 100) <= window.innerHeight;", selector)


def _indices(dash_duo, gallery: str = "#gallery") -> list[int]:
    return [int(e.get_attribute("data-index")) for e in dash_duo.find_elements(f"{gallery} .gallery-item")]


def _open_errors(dash_duo, store) -> None:
    dash_duo.driver.find_element(By.XPATH, ERRORS_TAB).click()
    _wait(dash_duo, lambda d: _matrix_drawn(dash_duo), "confusion matrix never drew")


@pytest.fixture(scope="module")
def demo(demo_store):
    return demo_store, demo_store.get(None)


def test_a_cell_click_brings_its_gallery_into_view_outlines_the_cell_and_clears_the_detail(dash_duo, demo):
    store, run = demo
    _start(dash_duo, store)
    _open_errors(dash_duo, store)
    assert not _in_view(dash_duo, ".errors-view .gallery-card")  # below the fold before the click
    t, p = 4, 5
    _click_cell(dash_duo, run.class_names, t, p)
    dash_duo.wait_for_text_to_equal("#gallery-title", f"true {t} → predicted {p}", timeout=SLOW)
    _wait(dash_duo, lambda d: _in_view(dash_duo, ".errors-view .gallery-card") and _in_view(
        dash_duo, "#gallery .gallery-item"), "the gallery was not scrolled into view")
    shapes = dash_duo.driver.execute_script(
        "return document.querySelector('#confusion-matrix .js-plotly-plot').layout.shapes")
    assert [(s["x0"], s["x1"], s["y0"], s["y1"]) for s in shapes] == [(p - .5, p + .5, t - .5, t + .5)]
    _wait(dash_duo, lambda d: _query(dash_duo).get("cell") == f"{t}-{p}", "the address did not follow the click")

    first = _indices(dash_duo)[0]
    dash_duo.find_element("#gallery .gallery-item").click()
    dash_duo.wait_for_contains_text("#detail-caption", f"#{first}", timeout=SLOW)
    _wait(dash_duo, lambda d: _in_view(dash_duo, "#detail-image"), "the detail is not in view")
    assert _in_view(dash_duo, "#gallery .gallery-item")  # both at once: the detail sticks beside the gallery

    _click_cell(dash_duo, run.class_names, 3, 3)  # another cell: the old image's detail goes
    dash_duo.wait_for_text_to_equal("#gallery-title", "3 (correct)", timeout=SLOW)
    _wait(dash_duo, lambda d: "empty" in d.find_element(By.ID, "image-detail").get_attribute("class"),
          "the detail of the previous cell's image stayed")
    _wait(dash_duo, lambda d: "image" not in _query(dash_duo), "the address kept the old image")
    assert _severe(dash_duo) == []


def test_a_link_reopens_the_view_after_a_reload_and_back_goes_back(dash_duo, demo):
    store, run = demo
    i = int(np.flatnonzero((run.labels == 4) & (run.preds == 5))[0])
    _start(dash_duo, store, f"?tab=errors&cell=4-5&image={i}")
    dash_duo.wait_for_text_to_equal("#gallery-title", "true 4 → predicted 5", timeout=SLOW)
    dash_duo.wait_for_contains_text("#detail-caption", f"#{i}", timeout=SLOW)
    assert "tab--selected" in dash_duo.driver.find_element(By.XPATH, ERRORS_TAB).get_attribute("class")

    _click_cell(dash_duo, run.class_names, 3, 3)
    _wait(dash_duo, lambda d: _query(dash_duo).get("cell") == "3-3", "the address did not follow the click")
    assert "sort" not in _query(dash_duo)  # a correct cell's own order (least confident first) is the default
    dash_duo.driver.refresh()
    dash_duo.wait_for_text_to_equal("#gallery-title", "3 (correct)", timeout=SLOW)
    least = analysis.sorted_selection(analysis.predictions_of(run), ((3, 3),), "least")
    _wait(dash_duo, lambda d: _indices(dash_duo) == least[:analysis.PAGE_SIZE].tolist(), "not the same gallery")

    dash_duo.driver.back()
    dash_duo.wait_for_text_to_equal("#gallery-title", "true 4 → predicted 5", timeout=SLOW)
    dash_duo.wait_for_contains_text("#detail-caption", f"#{i}", timeout=SLOW)
    dash_duo.driver.forward()
    dash_duo.wait_for_text_to_equal("#gallery-title", "3 (correct)", timeout=SLOW)

    # the explanations tab's controls and image come back from a link too
    dash_duo.driver.get(dash_duo.server_url + "/?tab=explain&method=saliency&target=3&layer=features.block1&explain=7")
    dash_duo.wait_for_contains_text("#xp-source-label", "Test image #7", timeout=SLOW)
    for control, shown in (("#xp-method", "Saliency"), ("#xp-target", "3: 3"), ("#xp-cam-layer", "features.block1")):
        dash_duo.wait_for_contains_text(control, shown, timeout=SLOW)

    # a link no page wrote: every bad value ignored, the defaults shown, nothing fails
    dash_duo.driver.get(dash_duo.server_url + "/?tab=nope&run=zzz&cell=99-1&page=-3&image=abc&conf=2-1&sort=bogus")
    dash_duo.wait_for_contains_text("#overview-cards", "ACCURACY", timeout=SLOW)
    _open_errors(dash_duo, store)
    dash_duo.wait_for_text_to_equal("#gallery-title", "All mistakes", timeout=SLOW)
    assert _severe(dash_duo) == []


def _predictions(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(run_dir / "predictions.npz") as f:
        logits = f["logits"].astype(np.float64)
        labels = f["label"]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return labels, probs / probs.sum(1, keepdims=True)


def test_the_csv_of_a_cell_lists_its_images_in_the_gallery_order(dash_duo, demo):
    store, run = demo
    _start(dash_duo, store, "?tab=errors&cell=3-3&sort=least&conf=0.5-0.999")
    dash_duo.wait_for_text_to_equal("#gallery-title", "3 (correct)", timeout=SLOW)
    labels, probs = _predictions(DEMO)  # recomputed here from the run's logits, not by the dashboard
    conf, pred = probs.max(1), probs.argmax(1)
    idx = np.flatnonzero((labels == 3) & (pred == 3) & (conf >= 0.5) & (conf <= 0.999))
    expected = idx[np.lexsort((idx, conf[idx]))]
    dash_duo.wait_for_text_to_equal("#gallery-count", str(len(expected)), timeout=SLOW)
    dash_duo.find_element("#gallery-export").click()
    path = Path(dash_duo.download_path) / "digits-demo-3-as-3.csv"
    _wait(dash_duo, lambda d: path.is_file() and path.stat().st_size > 0, "no CSV downloaded", timeout=30)
    rows = list(csv.DictReader(path.open()))
    assert [int(r["index"]) for r in rows] == expected.tolist()
    assert {(r["label"], r["prediction"]) for r in rows} == {("3", "3")}
    assert np.allclose([float(r["confidence"]) for r in rows], conf[expected], atol=1e-5)

    # the scoreboard table (AG Grid) writes its own rows, one per method
    dash_duo.driver.get(dash_duo.server_url + "/?tab=explain")
    board = _wait(dash_duo, lambda d: d.find_element(
        By.XPATH, "//summary[starts-with(normalize-space(), 'Scoreboard')]"), "no scoreboard")
    board.click()
    _wait(dash_duo, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#xp-board-grid .ag-center-cols-container .ag-row"))
          == 5, "scoreboard rows missing")
    dash_duo.find_element("#xp-board-export").click()
    path = Path(dash_duo.download_path) / "digits-demo-scoreboard-all.csv"
    _wait(dash_duo, lambda d: path.is_file() and path.stat().st_size > 0, "no scoreboard CSV", timeout=30)
    rows = list(csv.DictReader(path.open(encoding="utf-8-sig")))
    assert len(rows) == 5 and {"Grad-CAM", "Saliency"} <= {r["Method"] for r in rows}, rows[:1]


def _focused(dash_duo) -> int | None:
    index = dash_duo.driver.execute_script("return document.activeElement.getAttribute('data-index')")
    return None if index is None else int(index)


def test_the_keyboard_moves_between_thumbnails_turns_pages_and_opens_one(dash_duo, cat_dog_store):
    run = cat_dog_store.get(None)  # 500 cats, every one called a cat: 11 pages of one cell
    _start(dash_duo, cat_dog_store, "?tab=errors&cell=0-0")
    dash_duo.wait_for_text_to_equal("#gallery-title", "cat (correct)", timeout=SLOW)
    pages = -(-int(((run.labels == 0) & (run.preds == 0)).sum()) // analysis.PAGE_SIZE)
    dash_duo.wait_for_text_to_equal("#gallery-page-label", f"1 / {pages}", timeout=SLOW)
    order = analysis.sorted_selection(analysis.predictions_of(run), ((0, 0),), "least").tolist()
    _wait(dash_duo, lambda d: _indices(dash_duo) == order[:analysis.PAGE_SIZE], "first page not shown")
    assert dash_duo.find_element("#gallery .gallery-item").get_attribute("tabindex") == "0"
    dash_duo.driver.execute_script("document.querySelector('#gallery .gallery-item').focus()")
    outline = dash_duo.driver.execute_script(
        "return getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # focus is visible

    active = lambda: dash_duo.driver.switch_to.active_element  # noqa: E731
    active().send_keys(Keys.ARROW_RIGHT)
    assert _focused(dash_duo) == order[1]
    columns = dash_duo.driver.execute_script(
        "const g = [...document.querySelectorAll('#gallery .gallery-item')];"
        "return g.filter(e => e.offsetTop === g[0].offsetTop).length")
    active().send_keys(Keys.ARROW_DOWN)
    assert _focused(dash_duo) == order[1 + columns]
    active().send_keys(Keys.PAGE_DOWN)  # the next page, its first thumbnail focused
    dash_duo.wait_for_text_to_equal("#gallery-page-label", f"2 / {pages}", timeout=SLOW)
    _wait(dash_duo, lambda d: _focused(dash_duo) == order[analysis.PAGE_SIZE], "page 2's first not focused")
    _wait(dash_duo, lambda d: _query(dash_duo).get("page") == "1", "the address did not follow the page")
    active().send_keys(Keys.ARROW_LEFT)  # before the first: the previous page, its last thumbnail
    dash_duo.wait_for_text_to_equal("#gallery-page-label", f"1 / {pages}", timeout=SLOW)
    _wait(dash_duo, lambda d: _focused(dash_duo) == order[analysis.PAGE_SIZE - 1], "page 1's last not focused")
    active().send_keys(Keys.ENTER)
    dash_duo.wait_for_contains_text("#detail-caption", f"#{order[analysis.PAGE_SIZE - 1]}", timeout=SLOW)

    # jump to a test index: its page of this selection, its detail
    target = order[300]
    jump = dash_duo.find_element("#gallery-jump")
    jump.send_keys(str(target), Keys.ENTER)
    dash_duo.wait_for_text_to_equal("#gallery-page-label", f"{300 // analysis.PAGE_SIZE + 1} / {pages}", timeout=SLOW)
    dash_duo.wait_for_contains_text("#detail-caption", f"#{target}", timeout=SLOW)
    assert target in _indices(dash_duo)
    assert _severe(dash_duo) == []


def test_a_failing_callback_says_what_failed_in_its_card_and_logs_the_traceback(dash_duo, demo, monkeypatch,
                                                                                 caplog):
    from xai_dashboard import figures

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(figures, "confusion_figure", broken)
    store, _ = demo
    _start(dash_duo, store, "?tab=errors")
    with caplog.at_level("ERROR", logger="xai_dashboard.inputs"):
        _wait(dash_duo, lambda d: "internal error: RuntimeError" in d.find_element(By.ID, "confusion-matrix").text,
              "the matrix card does not say what failed")
    axes = dash_duo.driver.execute_script(
        "const l = document.querySelector('#confusion-matrix .js-plotly-plot').layout;"
        "return [l.xaxis.visible, l.yaxis.visible]")
    assert axes == [False, False]  # the message, not bare axes
    assert any(r.exc_info and "injected failure" in str(r.exc_info[1]) for r in caplog.records)


def test_every_chart_has_the_mode_bar_saving_a_png_at_three_times_its_size(dash_duo, demo):
    store, _ = demo
    _start(dash_duo, store)
    _wait(dash_duo, lambda d: d.find_elements(By.CSS_SELECTOR, "#roc-graph .modebar-btn"), "no mode bar")
    configs = dash_duo.driver.execute_script(
        "const s = window.store.getState(), out = {};"
        "for (const [id, path] of Object.entries(s.paths.strs)) {"
        "  let n = s.layout; for (const k of path) n = n[k];"
        "  if (n.type === 'Graph') out[id] = n.props.config || null; }"
        "return out;")
    # a colour-bar key beside a map is a static picture (staticPlot: nothing to zoom, hover or save)
    charts = {g: c for g, c in configs.items() if not (c or {}).get("staticPlot")}
    assert len(charts) >= 5
    for graph, config in charts.items():
        assert config and config.get("displayModeBar") != False, graph  # noqa: E712
        assert (config.get("toImageButtonOptions") or {}).get("scale") == 3, graph
    titles = [e.get_attribute("data-title") for e in dash_duo.find_elements("#roc-graph .modebar-btn")]
    assert "Download plot as a PNG" in titles and "Share chart..." not in titles  # nothing leaves for a cloud


def test_compare_runs_pages_through_a_set_and_opens_an_image_detail(dash_duo, cifar_store):
    a = cifar_store.get(cifar_store.default)
    others = cifar_store.comparable(a.name)
    if not others:
        pytest.skip("needs two CIFAR-10 runs evaluated on the same test set")
    b = cifar_store.get(others[0])
    from xai_dashboard import export

    both = export.comparison_set(a, b, "both").tolist()
    _start(dash_duo, cifar_store, "?tab=compare")
    dash_duo.wait_for_text_to_equal("#compare-both-count", str(len(both)), timeout=SLOW)
    _wait(dash_duo, lambda d: _indices(dash_duo, "#compare-both") == both[:analysis.PAGE_SIZE], "first page")
    dash_duo.find_element("#compare-both-next").click()
    _wait(dash_duo, lambda d: _indices(dash_duo, "#compare-both") == both[analysis.PAGE_SIZE:2 * analysis.PAGE_SIZE],
          "the second page of the set")
    i = _indices(dash_duo, "#compare-both")[0]
    dash_duo.find_element("#compare-both .gallery-item").click()
    dash_duo.wait_for_contains_text("#detail-caption", f"#{i}", timeout=SLOW)
    assert _query(dash_duo)["tab"] == "errors" and _query(dash_duo)["image"] == str(i)
    dash_duo.driver.back()  # back to the comparison, still on its second page
    _wait(dash_duo, lambda d: _indices(dash_duo, "#compare-both") == both[analysis.PAGE_SIZE:2 * analysis.PAGE_SIZE],
          "back did not return to the second page")
    dash_duo.find_element("#compare-thresholds-export").click()  # the table at each run's threshold, as CSV
    path = Path(dash_duo.download_path) / f"{a.name}-{b.name}-thresholds.csv"
    _wait(dash_duo, lambda d: path.is_file() and path.stat().st_size > 0, "no threshold table CSV", timeout=30)
    assert [r["run"] for r in csv.DictReader(path.open())] == [a.name, b.name]
    assert _severe(dash_duo) == []
