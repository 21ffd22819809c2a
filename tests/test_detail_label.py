"""Issue #10: the gallery image detail's true label follows the header's label switch. A reviews file
is written by hand (the format of :mod:`xai_dashboard.reviews`) into a temporary ``$XAI_REVIEWS_DIR``
for the digits demo; the detail's caption, asked of the app over HTTP as the page asks it, must say
what the file says: "wrong -> X" reads "X (reviewed; given: Y)" on the reviewed labels and "Y" on the
original ones; "fine" and "unsure" keep the given label. In Chromium too (dash_duo): the open detail
follows the switch."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_callback_inputs import body, post
from xai_dashboard.app import create_app

DEMO_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "digits-demo"
WRONG, FINE, UNSURE = 5, 6, 7  # test images the file reviews
DETAIL = "image-detail.className"  # the errors view's detail callback (its outputs include the caption)


def given_labels() -> np.ndarray:
    """The digits demo's test labels, read from its predictions file."""
    with np.load(DEMO_DIR / "predictions.npz") as f:
        return f["label"]


def write_reviews(folder: Path, reviews: dict[int, tuple[str, int | None]]) -> Path:
    """The demo's reviews file in ``folder``, in the format of :mod:`xai_dashboard.reviews`, written by hand:
    ``reviews``: test index -> (verdict, corrected class or None)."""
    meta = json.loads((DEMO_DIR / "meta.json").read_text())
    data = {"format": "xai-dashboard label reviews", "version": 1, "dataset": meta["dataset"]["fingerprint"],
            "num_test": int(len(given_labels())), "class_names": meta["class_names"],
            "reviews": {str(i): {"verdict": verdict, "label": label, "at": "2026-11-29T21:00:00+00:00"}
                        for i, (verdict, label) in reviews.items()}}
    path = folder / f"reviews-{meta['dataset']['fingerprint']}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def page(demo_store, tmp_path_factory):
    """``(client, dependencies, reviews file)`` of an app whose reviews live in a fresh folder."""
    folder = tmp_path_factory.mktemp("reviews")
    wrong_as = (int(given_labels()[WRONG]) + 1) % len(demo_store.get(None).class_names)  # another class
    path = write_reviews(folder, {WRONG: ("wrong", wrong_as), FINE: ("fine", None), UNSURE: ("unsure", None)})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XAI_REVIEWS_DIR", str(folder))
        mp.setenv("XAI_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        client = create_app(store=demo_store).server.test_client()
        assert client.get("/").status_code == 200
        yield client, client.get("/_dash-dependencies").get_json(), path


def _texts(node) -> list[str]:
    """Every string under a component's JSON (children and props alike)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [t for v in node.values() for t in _texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in _texts(v)]
    return []


def _true_labels(node) -> list[str]:
    """The text of every ``lbl-true`` component under a component's JSON."""
    if isinstance(node, list):
        return [t for v in node for t in _true_labels(v)]
    if not isinstance(node, dict):
        return []
    props = node.get("props", {})
    if "lbl-true" in str(props.get("className", "")).split():
        return ["".join(_texts(props.get("children")))]
    return [t for v in node.values() for t in _true_labels(v)]


def _answer(page, output: str, index: int, label_set: str, changed: str) -> dict:
    client, deps, _ = page
    dep = next(d for d in deps if output in d["output"].strip(".").split("..."))
    override = {("selected-image", "data"): {"run": "digits-demo", "index": index}, ("label-set", "value"): label_set}
    r = post(client, body(dep, "errors", override, changed))
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    return r.get_json()["response"]


def _label_line(response: dict) -> str:
    """The caption's one "True label" entry."""
    lines = _true_labels(response)
    assert len(lines) == 1, response
    return lines[0]


@pytest.mark.parametrize("index", [WRONG, FINE, UNSURE])
@pytest.mark.parametrize("label_set", ["original", "reviewed"])
def test_detail_shows_the_label_the_review_file_gives(page, index, label_set):
    reviews = json.loads(page[2].read_text())
    names, review = reviews["class_names"], reviews["reviews"][str(index)]
    given = names[int(given_labels()[index])]
    texts = _answer(page, DETAIL, index, label_set, "selected-image.data")
    if label_set == "reviewed" and review["verdict"] == "wrong":
        assert names[review["label"]] != given
        assert _label_line(texts) == f"{names[review['label']]} (reviewed; given: {given})"
    else:
        assert _label_line(texts) == given


def test_the_caption_follows_the_switch(page):
    """Flipping the switch alone redraws the caption (the explanation below keeps its method and target)."""
    reviews = json.loads(page[2].read_text())
    names = reviews["class_names"]
    corrected = names[reviews["reviews"][str(WRONG)]["label"]]
    given = names[int(given_labels()[WRONG])]
    on = _answer(page, DETAIL, WRONG, "reviewed", "label-set.value")
    off = _answer(page, DETAIL, WRONG, "original", "label-set.value")
    assert _label_line(on) == f"{corrected} (reviewed; given: {given})"
    assert _label_line(off) == given


def test_an_unusable_reviews_file_keeps_the_given_label_and_says_why(page, tmp_path, monkeypatch):
    bad = tmp_path / page[2].name
    bad.write_text("{not json")
    monkeypatch.setenv("XAI_REVIEWS_DIR", str(tmp_path))
    response = _answer(page, DETAIL, WRONG, "reviewed", "selected-image.data")
    names = json.loads(page[2].read_text())["class_names"]
    assert _label_line(response) == names[int(given_labels()[WRONG])]
    texts = _texts(response)
    assert any("Reviewed labels unavailable" in t and "not valid JSON" in t for t in texts), texts


@pytest.mark.browser
def test_the_switch_relabels_the_open_detail_in_the_browser(dash_duo, demo_store, tmp_path, monkeypatch):
    """A gallery image reviewed "wrong -> the predicted class": its detail's line changes with the switch."""
    from selenium.webdriver.common.by import By
    from test_explain_browser import _severe, _wait, first_gallery_image

    run = demo_store.get(None)
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XAI_REVIEWS_DIR", str(tmp_path))
    item, index = first_gallery_image(dash_duo, demo_store)
    reviews = json.loads(write_reviews(tmp_path, {index: ("wrong", int(run.preds[index]))}).read_text())
    names = reviews["class_names"]
    given, corrected = names[int(given_labels()[index])], names[reviews["reviews"][str(index)]["label"]]
    assert given != corrected  # the gallery lists mistakes
    item.click()
    line = lambda d: d.find_element(By.CSS_SELECTOR, "#detail-caption .lbl-true").text  # noqa: E731
    _wait(dash_duo, lambda d: d.find_elements(By.CSS_SELECTOR, "#detail-caption .lbl-true") and line(d) == given,
          "no given label in the detail")
    switch = dash_duo.driver.find_element(By.XPATH, "//*[@id='label-set']//label[normalize-space()='reviewed labels']")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", switch)
    _wait(dash_duo, lambda d: line(d) == f"{corrected} (reviewed; given: {given})",
          "the detail did not follow the switch")
    assert dash_duo.find_element("#xp-detail-method")  # the picker stayed
    assert _severe(dash_duo) == []
