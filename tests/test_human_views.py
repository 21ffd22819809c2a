"""The humans-vs-model page on the digits demo with a made-up annotator file: each slice's CSV lists exactly
the images of the slice's definition in the gallery's order, a slice button reaches the server as a relayed
click (a redraw of the buttons is none), and in headless Chromium the entropy scatter is drawn by WebGL and
a slice button fills the gallery."""
from __future__ import annotations

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from test_embedding_map import assert_webgl, csv_of, run_callback
from test_explain_browser import _open_tab, _severe, _wait

from xai_dashboard import human_analysis as ha
from xai_dashboard.app import create_app
from xai_dashboard.human_labels import HUMAN_LABELS_ENV


def _crowd(labels: np.ndarray, k: int) -> np.ndarray:
    """People's label shares ``(N, k)``: for most images a clear majority on the given label, for the rest
    Dirichlet noise (some agreeing with another class), so that every slice has members."""
    rng = np.random.default_rng(0)
    shares = rng.dirichlet(np.full(k, 0.3), size=len(labels))
    clear = rng.random(len(labels)) < 0.7
    shares[clear] *= 0.05
    shares[clear, labels[clear]] += 0.95
    return shares / shares.sum(1, keepdims=True)


@pytest.fixture
def crowd(demo_store, tmp_path, monkeypatch):
    """The demo run and its made-up annotator file, set through ``$XAI_HUMAN_LABELS``."""
    run = demo_store.get(None)
    human = _crowd(run.labels, len(run.class_names))
    np.savez(tmp_path / "crowd.npz", probs=human, y=run.labels)
    monkeypatch.setenv(HUMAN_LABELS_ENV, str(tmp_path / "crowd.npz"))
    return run, human


def _bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _slice(run, human, key: str) -> list[int]:
    """Slice ``key`` by its words in :data:`human_analysis.SLICES`, image by image, in its stated order."""
    rows = []
    for i in range(len(run.labels)):
        given, probs, people = int(run.labels[i]), run.probs[i].astype(np.float64), human[i]
        pred, conf, top = int(np.argmax(probs)), float(np.max(probs)), float(np.max(people))
        member, order = {
            "agree_model_wrong": (people[given] >= ha.HUMANS_AGREE and pred != given, -conf),
            "confident_split": (conf >= ha.MODEL_CONFIDENT and top < ha.HUMANS_SPLIT, -_bits(people)),
            "disagree_given": (people[given] < top, people[given]),
            "both_unsure": (conf < ha.MODEL_UNSURE and top < ha.HUMANS_SPLIT, -(_bits(people) + _bits(probs))),
        }[key]
        if member:
            rows.append((order, i))
    return [i for _, i in sorted(rows)]


def test_each_slice_csv_lists_exactly_the_slice(demo_store, crowd):
    run, human = crowd
    client = create_app(store=demo_store).server.test_client()
    sizes = {}
    for key in ha.SLICES:
        answer = run_callback(client, "hv-download.data", {"hv-export.n_clicks": 1, "run-select.value": run.name,
                                                          "hv-selection.data": key}, "hv-export.n_clicks")
        frame = csv_of(answer, "hv-download")
        want = _slice(run, human, key)
        sizes[key] = len(want)
        assert frame["index"].tolist() == want, key
        assert list(frame.columns[:6]) == ["index", "file", "label", "prediction", "confidence", "p(true)"]
        np.testing.assert_allclose(frame["people: share of label"], human[want, run.labels[want]], rtol=1e-6)
        np.testing.assert_allclose(frame["human entropy (bits)"], [_bits(human[i]) for i in want], rtol=1e-6)
    assert all(sizes.values()), sizes  # the made-up crowd gives every slice members
    none = run_callback(client, "hv-download.data", {"hv-export.n_clicks": 1, "run-select.value": run.name},
                        "hv-export.n_clicks")
    assert "choose a slice first" in str(none["response"]["hv-export-note"])


def test_a_relayed_slice_click_opens_the_slice_and_a_redraw_does_not(demo_store, crowd):
    run, human = crowd
    client = create_app(store=demo_store).server.test_client()
    page = {"run-select.value": run.name, "view-tabs.value": "humans", "hv-page.data": 0}
    click = {"id": {"type": "hv-slice", "slice": "disagree_given"}, "n_clicks": 1}
    shown = run_callback(client, "hv-gallery.children", {**page, "hv-slice-click.data": click},
                         "hv-slice-click.data")["response"]
    want = _slice(run, human, "disagree_given")
    assert shown["hv-selection"]["data"] == "disagree_given" and shown["hv-count"]["children"] == f"{len(want):,}"
    items = shown["hv-gallery"]["children"]
    assert [item["props"]["data-index"] for item in items] == want[:48]
    drawn = {**click, "n_clicks": 0}  # what no relay sends, but a crafted request may: no click, nothing chosen
    assert run_callback(client, "hv-gallery.children", {**page, "hv-slice-click.data": drawn},
                        "hv-slice-click.data")["response"]["hv-selection"]["data"] is None
    bad = run_callback(client, "hv-gallery.children", {**page, "hv-slice-click.data": {"id": "x", "n_clicks": 1}},
                       "hv-slice-click.data")["response"]
    assert "not a click" in str(bad["hv-gallery"]["children"])


def test_no_server_callback_of_these_views_listens_to_pattern_matched_buttons(demo_store):
    """A redraw of such buttons would cancel the callback's answer (views.clicks says why): clicks are relayed."""
    app = create_app(store=demo_store)
    views = {"xai_dashboard.views.humans", "xai_dashboard.views.embedding_map"}
    server = [c for c in app.callback_map.values() if "callback" in c and c["callback"].__module__ in views]
    assert {"update", "slice_gallery", "export_slice", "draw", "gallery", "export_selection", "detail"} <= {
        c["callback"].__name__ for c in server}
    assert [c["callback"].__name__ for c in server if any(i["id"].startswith("{") for i in c["inputs"])] == []


@pytest.mark.browser
def test_the_scatter_is_webgl_and_a_slice_button_fills_the_gallery(dash_duo, demo_store, crowd, tmp_path,
                                                                   monkeypatch):
    run, human = crowd
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    dash_duo.start_server(create_app(store=demo_store))
    _wait(dash_duo, lambda d: d.find_elements(By.ID, "view-tabs"), "no page")
    _open_tab(dash_duo, "Humans vs model")
    points = "const gd = document.querySelector('#hv-scatter .js-plotly-plot'); return gd && gd._fullData ? " \
             "gd._fullData.reduce((n, t) => n + (t._length || 0), 0) : 0;"
    _wait(dash_duo, lambda d: d.execute_script(points) == len(run.labels), "the scatter never drew every point")
    assert_webgl(dash_duo, "#hv-scatter")
    want = _slice(run, human, "both_unsure")
    button = "//*[@id='hv-slices']//button[starts-with(normalize-space(), 'Both unsure')]"
    _wait(dash_duo, lambda d: d.find_elements(By.XPATH, button), "no slice buttons")
    dash_duo.driver.find_element(By.XPATH, button).click()
    shown = "return Array.from(document.querySelectorAll('#hv-gallery .gallery-item'))" \
            ".map(e => Number(e.getAttribute('data-index')));"
    _wait(dash_duo, lambda d: d.execute_script(shown) == want[:48], "the gallery does not show the slice")
    assert _severe(dash_duo) == []
