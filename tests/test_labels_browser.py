"""Label issues and humans vs model in headless Chromium (dash_duo), on cifar10-fast with CIFAR-10H:
review a flagged label and see the corrected accuracy change (in the tab and, switched to the reviewed
labels, in the overview); click a slice and see its images; click one and see its detail. On the digits
demo's twin: review clicks, one made while the page redraws, all land in the reviews file."""
from __future__ import annotations

import re

import numpy as np
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from test_explain_browser import SLOW, _open_tab, _severe, _src, _wait

from tests.test_callback_inputs import TWIN, make_twin
from xai_dashboard import label_issues
from xai_dashboard.app import create_app
from xai_dashboard.human_labels import HUMAN_LABELS_ENV, human_probs
from xai_dashboard.reviews import ReviewStore
from xai_dashboard.store import RunStore

pytestmark = pytest.mark.browser


@pytest.fixture
def fast_page(dash_duo, cifar_store, cifar_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_REVIEWS_DIR", str(tmp_path / "reviews"))
    monkeypatch.delenv(HUMAN_LABELS_ENV, raising=False)
    run = next((r for r in cifar_store.runs.values() if r.name == "cifar10-fast"), None)
    if run is None or cifar_store.default != run.name:
        pytest.skip("cifar10-fast is not the first CIFAR-10 run found")
    dash_duo.start_server(create_app(store=cifar_store))
    dash_duo.wait_for_element("#run-select", timeout=SLOW)
    return dash_duo, run


@pytest.fixture(scope="module")
def twin_only(tmp_path_factory):
    """The digits demo's noisier twin alone (cleanlab flags 51 of its 360 labels, none of the demo's)."""
    return RunStore.from_dirs([make_twin(tmp_path_factory.mktemp("twin") / TWIN)])


@pytest.fixture
def twin_page(dash_duo, twin_only, tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_REVIEWS_DIR", str(tmp_path / "reviews"))
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    dash_duo.start_server(create_app(store=twin_only))
    dash_duo.wait_for_element("#run-select", timeout=SLOW)
    return dash_duo, twin_only.get(None)


def _text(dash_duo, selector: str) -> str:
    found = dash_duo.driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


def _accuracies(text: str) -> list[str]:
    return re.findall(r"(\d+\.\d+)%", text)


def test_reviewing_a_label_changes_the_corrected_accuracy(fast_page):
    dash_duo, run = fast_page
    _open_tab(dash_duo, "Label issues")
    _wait(dash_duo, lambda d: d.find_elements(By.CSS_SELECTOR, "#lbl-gallery .review-item"), "no flagged images")
    first = dash_duo.driver.find_elements(By.CSS_SELECTOR, "#lbl-gallery .review-item")[0]
    index = int(first.get_attribute("data-index"))
    issues = label_issues.rank_label_issues(run)
    assert index == int(issues["index"].iloc[0])  # most suspicious first
    assert _text(dash_duo, "#lbl-count") == f"{len(issues):,}"
    assert str(dash_duo.driver.execute_script("return arguments[0].textContent", first)).count(
        run.class_names[int(issues["suggested"].iloc[0])]) >= 1
    before = _accuracies(_text(dash_duo, "#lbl-summary"))
    assert before[0] == before[1] == f"{(run.preds == run.labels).mean() * 100:.2f}"
    # the suggested class is the model's prediction here, so the correction makes one more image right
    assert int(issues["suggested"].iloc[0]) == run.preds[index]
    first.find_element(By.XPATH, ".//button[normalize-space()='label is wrong →']").click()
    after = f"{((run.preds == run.labels).sum() + 1) / len(run.labels) * 100:.2f}"
    _wait(dash_duo, lambda d: _accuracies(_text(dash_duo, "#lbl-summary"))[1:] == [after], "no corrected accuracy")
    assert "Saved: test image #" in _text(dash_duo, "#lbl-message")
    assert "label is wrong → " in _text(dash_duo, f"#lbl-gallery .review-item[data-index='{index}'] .review-state")
    # the header switch: the overview's accuracy on the reviewed labels
    _open_tab(dash_duo, "Overview")
    card = "#overview-cards .metric:first-child .value"
    _wait(dash_duo, lambda d: _text(dash_duo, card) == before[0] + "%", "overview accuracy missing")
    dash_duo.driver.find_element(By.XPATH, "//*[@id='label-set']//label[normalize-space()='reviewed labels']").click()
    _wait(dash_duo, lambda d: _text(dash_duo, card) == after + "%", "overview did not switch to the reviewed labels")
    assert "1 labels corrected by reviews" in _text(dash_duo, "#label-set-note")
    assert _severe(dash_duo) == []


def test_a_slice_shows_its_images_and_one_opens_its_detail(fast_page, cifar_dir):
    dash_duo, run = fast_page
    human = human_probs(run, cifar_dir)
    if human is None:
        pytest.skip("CIFAR-10H file not beside the shared data")
    _open_tab(dash_duo, "Humans vs model")
    button = "//*[@id='hv-slices']//button[starts-with(normalize-space(), 'Humans disagree with the given label')]"
    _wait(dash_duo, lambda d: d.find_elements(By.XPATH, button), "no slice buttons")
    n = np.arange(len(run.labels))
    expected = n[human[n, run.labels] < human.max(1)]  # the slice's definition
    assert dash_duo.driver.find_element(By.XPATH, button).text.endswith(f"· {len(expected)}")
    dash_duo.driver.find_element(By.XPATH, button).click()
    _wait(dash_duo, lambda d: d.find_elements(By.CSS_SELECTOR, "#hv-gallery .gallery-item"), "slice gallery empty")
    shown = [int(e.get_attribute("data-index")) for e in
             dash_duo.driver.find_elements(By.CSS_SELECTOR, "#hv-gallery .gallery-item")]
    assert _text(dash_duo, "#hv-count") == str(len(expected))
    assert len(shown) == min(48, len(expected)) and set(shown) <= set(expected.tolist())
    # the entropy scatter: one point per test image, sent as WebGL traces. (The vendored cartesian plotly.js
    # bundle has no scattergl: it draws them as SVG scatter; Dash's full bundle draws WebGL.)
    plot = "document.querySelector('#hv-scatter .js-plotly-plot')"
    _wait(dash_duo, lambda d: d.find_elements(By.CSS_SELECTOR, "#hv-scatter .js-plotly-plot"), "no scatter")
    sent = dash_duo.driver.execute_script(f"return {plot}.data.map(t => t.type)")
    drawn = dash_duo.driver.execute_script(f"return {plot}._fullData.map(t => [t.visible, t._length])")
    assert sent == ["scattergl", "scattergl"]
    assert [t[0] for t in drawn] == [True, True] and sum(t[1] for t in drawn) == len(run.labels)
    # a point of the scatter opens its image's detail in the errors view (a click, as plotly reports it)
    point = int(np.flatnonzero(run.preds != run.labels)[5])  # the 6th point of the "model wrong" trace
    dash_duo.driver.execute_script(f"{plot}.emit('plotly_click', {{points: [{{curveNumber: 1, pointNumber: 5, "
                                   f"pointIndex: 5, customdata: {point}, data: {plot}.data[1], "
                                   f"fullData: {plot}._fullData[1]}}]}})")
    _wait(dash_duo, lambda d: f"#{point}" in _text(dash_duo, "#detail-caption"), "scatter click opened nothing")
    _open_tab(dash_duo, "Humans vs model")
    _wait(dash_duo, lambda d: d.find_elements(By.CSS_SELECTOR, "#hv-gallery .gallery-item"), "slice gallery gone")
    # a thumbnail opens the image's detail in the errors view
    dash_duo.driver.find_elements(By.CSS_SELECTOR, "#hv-gallery .gallery-item")[0].click()
    _wait(dash_duo, lambda d: f"#{shown[0]}" in _text(dash_duo, "#detail-caption"), "detail did not open")
    # the detail's Grad-CAM overlay loads the model: let it finish before the server is stopped
    _wait(dash_duo, lambda d: _src(dash_duo, "#xp-detail-overlay").startswith("data:image/png"), "no overlay")
    assert _severe(dash_duo) == []


def test_review_clicks_are_saved_to_the_reviews_file(twin_page):
    """Each click reaches the server through the relay store (views.clicks) while the page it causes is
    redrawn: every review lands in the file, with its verdict and, for "wrong", the class chosen."""
    dash_duo, run = twin_page
    issues = label_issues.rank_label_issues(run)
    reviews = ReviewStore.for_run(run)
    _open_tab(dash_duo, "Label issues")
    _wait(dash_duo, lambda d: d.find_elements(By.CSS_SELECTOR, "#lbl-gallery .review-item"), "no flagged images")
    assert not reviews.path.exists()
    first, second, third = (int(i) for i in issues["index"].iloc[:3])

    def review(index: int, button: str):
        item = f"#lbl-gallery .review-item[data-index='{index}']"
        for _ in range(3):  # the page may be redrawn between finding the button and clicking it
            try:
                return dash_duo.driver.find_element(By.CSS_SELECTOR, item).find_element(
                    By.XPATH, f".//button[normalize-space()='{button}']").click()
            except StaleElementReferenceException:
                continue
        raise AssertionError(f"could not click {button!r} of #{index}")

    def saved() -> dict:
        return {i: (r.verdict, r.label) for i, r in reviews.load().items()}

    review(first, "label is fine")
    _wait(dash_duo, lambda d: saved() == {first: ("fine", None)}, "the first review was not saved")
    # the next two at once: the third is clicked while the page the second one causes is on its way
    review(second, "not sure")
    review(third, "label is wrong →")
    suggested = int(issues["suggested"].iloc[2])
    _wait(dash_duo, lambda d: saved() == {first: ("fine", None), second: ("unsure", None), third: ("wrong", suggested)},
          f"the reviews file holds {saved()}")
    _wait(dash_duo, lambda d: "3 reviewed" in _text(dash_duo, "#lbl-summary"), "the summary did not count 3 reviews")
    assert "label is wrong → " + run.class_names[suggested] in _text(
        dash_duo, f"#lbl-gallery .review-item[data-index='{third}'] .review-state")
    assert _severe(dash_duo) == []
