"""The embedding map: its traces hold exactly the points of their colour, the confusion cell's points are
ringed (a new cell patches only that trace), a selection is validated and downloads as CSV, and in headless
Chromium (dash_duo) the points are drawn by WebGL, a box selection fills the gallery, a click shows the
image's nearest training examples and a hover its thumbnail."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from test_explain_browser import _open_tab, _severe, _wait

from xai_dashboard import inputs
from tests.conftest import CHECKPOINTS
from xai_dashboard.app import create_app
from xai_dashboard.embedding_space import map_coordinates
from xai_dashboard.store import RunStore
from xai_dashboard.views import embedding_map as em

_DEMO = RunStore.from_dirs([CHECKPOINTS / "digits-demo"]).get(None)  # for the property test (no fixtures there)


def _trace_points(fig) -> dict[str, set[int]]:
    return {t.name: set(t.customdata) for t in fig.data}


def test_class_traces_hold_exactly_their_class(demo_store):
    run = demo_store.get(None)
    xy, note = map_coordinates(run, "umap")
    assert note == "" and xy.shape == (len(run.labels), 2)
    for by, values in (("true", run.labels), ("pred", run.preds)):
        traces = _trace_points(em.map_figure(xy, by, values, run.class_names))
        for c, name in enumerate(run.class_names):
            assert traces[name] == {i for i in range(len(values)) if values[i] == c}
    traces = _trace_points(em.map_figure(xy, "correct", run.labels == run.preds, run.class_names))
    assert traces["wrong"] == {i for i in range(len(run.labels)) if run.labels[i] != run.preds[i]}
    assert traces["correct"] | traces["wrong"] == set(range(len(run.labels)))


def test_continuous_colour_puts_each_point_at_its_coordinates_with_its_value(demo_store):
    run = demo_store.get(None)
    xy, _ = map_coordinates(run, "pca")
    conf = run.probs.max(1)
    trace, ring = em.map_figure(xy, "confidence", conf, run.class_names).data
    idx = np.asarray(trace.customdata)
    assert sorted(idx.tolist()) == list(range(len(conf))) and list(ring.customdata) == []
    np.testing.assert_array_equal(np.asarray(trace.x), xy[idx, 0])
    np.testing.assert_array_equal(np.asarray(trace.marker.color), conf[idx].astype(np.float32))


def test_the_cached_figure_is_the_map_and_is_built_once_per_map(demo_store, tmp_path, monkeypatch):
    """What the draw sends: each trace's base64 coordinates decode to the points of its customdata; the
    same figure as a fresh build; read back without rebuilding; other coordinates are not served it."""
    import base64
    import json

    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path))
    run = demo_store.get(None)
    xy, wrong = map_coordinates(run, "pca")[0], run.labels != run.preds
    fig = em.cached_figure(xy, "correct", ~wrong, run.class_names)
    assert fig == json.loads(em.map_figure(xy, "correct", ~wrong, run.class_names).to_json())
    for trace in fig["data"]:
        idx = np.asarray(trace["customdata"], dtype=np.int64)
        for axis, column in (("x", 0), ("y", 1)):
            sent = trace[axis]
            got = np.frombuffer(base64.b64decode(sent["bdata"]), dtype=sent["dtype"]) if idx.size else []
            np.testing.assert_array_equal(got, xy[idx, column])
    assert set(fig["data"][1]["customdata"]) == set(np.flatnonzero(wrong).tolist())
    assert fig["data"][-1]["customdata"] == []  # the ring: empty until a cell is chosen
    built = []
    monkeypatch.setattr(em, "map_figure", lambda *a: built.append(a) or pytest.fail("rebuilt a cached figure"))
    assert em.cached_figure(xy, "correct", ~wrong, run.class_names) == fig and not built
    with pytest.raises(pytest.fail.Exception):
        em.cached_figure(xy[::-1], "correct", ~wrong, run.class_names)  # another projection's points


def test_the_errors_views_cell_is_ringed(demo_store):
    run = demo_store.get(None)
    wrong = [(int(t), int(p)) for t, p in zip(run.labels, run.preds) if t != p]
    t, p = wrong[0]
    ring, words = em._highlight(run, {"run": run.name, "cells": [[t, p]]})
    assert set(ring.tolist()) == {i for i in range(len(run.labels)) if (run.labels[i], run.preds[i]) == (t, p)}
    assert words.startswith(f"true {run.class_names[t]} → predicted {run.class_names[p]}")
    fig = em.map_figure(map_coordinates(run, "pca")[0], "true", run.labels, run.class_names, ring, words)
    assert fig.data[-1].name == words and set(fig.data[-1].customdata) == set(ring.tolist())
    assert em._highlight(run, {"run": run.name, "cells": None}) == (None, "")  # "all mistakes" is no cell
    assert em._highlight(run, {"run": "other", "cells": [[t, p]]}) == (None, "")


def test_map_selection_is_validated(demo_store):
    run = demo_store.get(None)
    n = len(run.labels)
    assert inputs.map_selection({"run": run.name, "indices": [5, 3, 5]}, run) == [3, 5]
    assert inputs.map_selection({"run": "another", "indices": [1]}, run) is None
    assert inputs.map_selection(None, run) is None
    for bad in ({"run": run.name, "indices": [n]}, {"run": run.name, "indices": [-1]},
                {"run": run.name, "indices": ["3"]}, {"run": run.name, "indices": list(range(n + 1))},
                {"run": run.name}, [1, 2]):
        with pytest.raises(inputs.BadInput):
            inputs.map_selection(bad, run)


def test_label_issue_colouring_has_a_value_per_point(demo_store):
    run = demo_store.get(None)
    values, note = em.colour_values(run, "label_issue")
    assert note == "" and values.shape == (len(run.labels),) and np.all((values >= 0) & (values <= 1))
    values, note = em.colour_values(run, "human_entropy")
    assert values is None and "annotator" in note  # digits have no annotator file


def run_callback(client, output: str, values: dict, changed: str) -> dict:
    """POST the server callback whose output names ``output`` (e.g. ``"emb-download.data"``) and whose input
    ``changed`` (``"id.prop"``) changed, as the page would: ``values`` ``{"id.prop": value}`` for its inputs
    and state (others None). Its JSON answer; ``{}`` when it sent nothing (PreventUpdate)."""
    dep = next(d for d in client.get("/_dash-dependencies").get_json()
               if output in d["output"] and not d.get("clientside_function")
               and changed in (f"{i['id']}.{i['property']}" for i in d["inputs"]))
    parts = [{"id": p.rsplit(".", 1)[0], "property": p.rsplit(".", 1)[1]}
             for p in dep["output"].strip(".").split("...")]

    def fill(specs):
        return [{**s, "value": values.get(f"{s['id']}.{s['property']}")} for s in specs]

    r = client.post("/_dash-update-component", json={
        "output": dep["output"], "outputs": parts if dep["output"].startswith("..") else parts[0],
        "changedPropIds": [changed], "inputs": fill(dep["inputs"]), "state": fill(dep["state"])})
    assert r.status_code in (200, 204), r.get_data(as_text=True)[:300]
    return r.get_json() if r.status_code == 200 else {}


def csv_of(answer: dict, component: str) -> pd.DataFrame:
    """The CSV a ``dcc.Download`` was sent, as a frame."""
    sent = answer["response"][component]["data"]
    assert not sent["base64"] and sent["filename"].endswith(".csv")
    names = {"label": str, "prediction": str, "people: top class": str}  # class names may be digits
    return pd.read_csv(io.StringIO(sent["content"]), keep_default_na=False, dtype=names)


def test_the_selection_csv_lists_exactly_the_selected_images(demo_store):
    """Every selected image once, ascending (the gallery's order), with the errors gallery's columns; the
    loss is -log p(given label) and the margin top-1 minus top-2, computed here from the probabilities."""
    run = demo_store.get(None)
    rng = np.random.default_rng(3)
    picked = rng.choice(len(run.labels), 120).tolist()  # with repeats: a lasso over overlapping traces
    client = create_app(store=demo_store).server.test_client()
    answer = run_callback(client, "emb-download.data", {
        "emb-export.n_clicks": 1, "run-select.value": run.name,
        "emb-selection.data": {"run": run.name, "indices": picked}}, "emb-export.n_clicks")
    frame = csv_of(answer, "emb-download")
    want = sorted(set(picked))
    assert list(frame.columns) == ["index", "file", "label", "prediction", "confidence", "p(true)", "loss", "margin"]
    assert frame["index"].tolist() == want
    names = run.class_names
    assert frame["label"].tolist() == [names[run.labels[i]] for i in want]
    assert frame["prediction"].tolist() == [names[int(np.argmax(run.probs[i]))] for i in want]
    np.testing.assert_allclose(frame["loss"], [-np.log(run.probs[i, run.labels[i]]) for i in want], rtol=1e-5)
    np.testing.assert_allclose(frame["margin"], [np.diff(np.sort(run.probs[i])[-2:])[0] for i in want], atol=1e-6)
    nothing = run_callback(client, "emb-download.data", {"emb-export.n_clicks": 1, "run-select.value": run.name},
                           "emb-export.n_clicks")
    assert "select points on the map first" in str(nothing["response"]["emb-export-note"])


def test_a_return_to_the_tab_sends_nothing_or_only_the_ring_of_a_cell_chosen_meanwhile(demo_store):
    run = demo_store.get(None)
    t, p = next((int(a), int(b)) for a, b in zip(run.labels, run.preds) if a != b)
    cell = [i for i in range(len(run.labels)) if (run.labels[i], run.preds[i]) == (t, p)]
    client = create_app(store=demo_store).server.test_client()
    page = {"run-select.value": run.name, "emb-projection.value": "umap", "emb-colour.value": "true",
            "view-tabs.value": "embedding_map", "emb-precompute-poll.disabled": True}
    opened, chosen = "embedding_map-opened.data", {"run": run.name, "cells": [[t, p]]}
    first = run_callback(client, "emb-drawn.data", page, opened)["response"]
    drawn = {"run": run.name, "projection": "umap", "colour": "true", "ring": ""}
    assert first["emb-drawn"]["data"] == drawn and len(first["emb-map"]["figure"]["data"]) == len(run.class_names) + 1
    assert run_callback(client, "emb-drawn.data", {**page, "emb-drawn.data": drawn}, opened) == {}
    # back on the tab after a cell was chosen in the errors view: only the ringed (last) trace is replaced
    answer = run_callback(client, "emb-drawn.data", {**page, "emb-drawn.data": drawn,
                                                     "gallery-selection.data": chosen}, opened)["response"]
    (op,) = answer["emb-map"]["figure"]["operations"]
    assert op["operation"] == "Assign" and op["location"] == ["data", -1]
    assert op["params"]["value"]["customdata"] == cell and "Ringed" in answer["emb-ring"]["children"]
    assert answer["emb-drawn"]["data"]["ring"].startswith(f"true {run.class_names[t]}") and "emb-note" not in answer
    # hidden, the map computes nothing, whatever fired it
    hidden = {**page, "view-tabs.value": "errors", "gallery-selection.data": chosen}
    assert run_callback(client, "emb-drawn.data", hidden, "run-select.value") == {}
    recoloured = run_callback(client, "emb-drawn.data", {**page, "emb-colour.value": "correct",
                                                         "emb-drawn.data": drawn}, "emb-colour.value")["response"]
    assert recoloured["emb-drawn"]["data"] == {**drawn, "colour": "correct"}
    # a map first drawn while a cell is selected rings it (the cached figure's empty ring replaced)
    ringed = run_callback(client, "emb-drawn.data", {**page, "gallery-selection.data": chosen},
                          opened)["response"]["emb-map"]["figure"]["data"]
    assert ringed[-1]["customdata"] == cell and ringed[-1]["name"].startswith(f"true {run.class_names[t]}")


# ------------------------------------------------------------------ in the browser

_POINTS = "const gd = document.querySelector('#emb-map .js-plotly-plot'); return gd && gd.data ? " \
          "gd.data.reduce((n, t) => n + (t.customdata ? t.customdata.length : 0), 0) : 0;"
# Emits what plotly emits after a lasso: the chosen points of trace 0 (Dash copies their customdata).
_SELECT = """
const gd = document.querySelector('#emb-map .js-plotly-plot'), k = arguments[0];
const pts = gd.data[0].customdata.slice(0, k).map((_, j) => ({curveNumber: 0, pointNumber: j, pointIndex: j}));
gd.emit('plotly_selected', {points: pts});
return gd.data[0].customdata.slice(0, k);
"""
_GALLERY = "return Array.from(document.querySelectorAll('#emb-gallery .gallery-item'))" \
           ".map(e => Number(e.getAttribute('data-index')));"
# How plotly drew a graph: its WebGL canvases, its SVG point paths, the trace types it kept (an unknown
# type, as scattergl is to plotly.js's "cartesian" bundle, silently becomes an SVG "scatter").
DRAWN = """
const gd = document.querySelector(arguments[0] + ' .js-plotly-plot');
return {gl: gd.querySelectorAll('canvas.gl-canvas-context').length,
        svg: gd.querySelectorAll('.scatterlayer .point').length,
        types: Array.from(new Set(gd._fullData.map(t => t.type))), nogl: !!gd.querySelector('.no-webgl')};
"""


@pytest.fixture
def map_page(dash_duo, demo_store, tmp_path, monkeypatch):
    """The digits demo's map tab with every point drawn (the demo ships its embeddings and maps)."""
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    run = demo_store.get(None)
    dash_duo.start_server(create_app(store=demo_store))
    _wait(dash_duo, lambda d: d.find_elements(By.ID, "view-tabs"), "no page")
    _open_tab(dash_duo, "Embedding map")
    _wait(dash_duo, lambda d: d.execute_script(_POINTS) == len(run.labels), "the map never drew every point")
    return dash_duo, run


def assert_webgl(dash_duo, graph: str) -> None:
    """Every point of ``graph`` is drawn by WebGL: a gl canvas, no SVG point, no "WebGL is not supported"."""
    drawn = dash_duo.driver.execute_script(DRAWN, graph)
    assert drawn["gl"] >= 1 and drawn["svg"] == 0 and drawn["types"] == ["scattergl"] and not drawn["nogl"], drawn


@pytest.mark.browser
def test_a_selection_on_the_map_opens_its_images_in_the_gallery(map_page):
    dash_duo, run = map_page
    assert_webgl(dash_duo, "#emb-map")
    chosen = dash_duo.driver.execute_script(_SELECT, 5)
    _wait(dash_duo, lambda d: sorted(d.execute_script(_GALLERY)) == sorted(chosen), "gallery missing the selection")
    assert dash_duo.driver.find_element(By.ID, "emb-count").text == "5"
    # a real box drag: the gallery lists exactly what plotly selected
    dash_duo.driver.execute_script("Plotly.relayout(document.querySelector('#emb-map .js-plotly-plot'), "
                                   "{dragmode: 'select'})")
    drag = dash_duo.driver.find_element(By.CSS_SELECTOR, "#emb-map .nsewdrag")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", drag)
    w, h = drag.size["width"], drag.size["height"]  # selenium 4.2 offsets from the top-left corner
    ActionChains(dash_duo.driver).move_to_element_with_offset(drag, w // 4, h // 4).click_and_hold() \
        .move_by_offset(w // 4, h // 4).move_by_offset(w // 4, h // 4).release().perform()
    selected = "return document.querySelector('#emb-map .js-plotly-plot').data.flatMap(" \
               "t => (t.selectedpoints || []).map(j => t.customdata[j]));"
    _wait(dash_duo, lambda d: d.execute_script(selected), "the drag selected nothing")
    want = sorted(set(dash_duo.driver.execute_script(selected)))
    _wait(dash_duo, lambda d: d.find_element(By.ID, "emb-count").text == f"{len(want):,}", "count differs")
    assert sorted(dash_duo.driver.execute_script(_GALLERY)) == want[:48]
    assert _severe(dash_duo) == []


@pytest.mark.browser
def test_click_hover_and_confusion_cell(map_page):
    dash_duo, run = map_page
    click = ("const gd = document.querySelector('#emb-map .js-plotly-plot');"
             "gd.emit('plotly_click', {points: [{curveNumber: 0, pointNumber: 0}]}); return gd.data[0].customdata[0];")
    index = dash_duo.driver.execute_script(click)
    _wait(dash_duo, lambda d: f"#{index}:" in d.find_element(By.ID, "emb-detail").text, "no detail for the click")
    thumbs = "#emb-neighbours .gallery-item img"
    _wait(dash_duo, lambda d: len(d.find_elements(By.CSS_SELECTOR, thumbs)) == 8, "no nearest training examples")
    loaded = f"return Array.from(document.querySelectorAll('{thumbs}')).every(i => i.complete && i.naturalWidth > 0)"
    _wait(dash_duo, lambda d: d.execute_script(loaded), "training thumbnails did not load")
    assert all(f"/img/{run.name}/train/" in e.get_attribute("src") for e in dash_duo.find_elements(thumbs))
    # the mouse over a point: its pixel from plotly's own axes, relative to the plot area's corner
    where = ("const gd = document.querySelector('#emb-map .js-plotly-plot'), L = gd._fullLayout;"
             "return [L.xaxis.l2p(gd._fullData[0].x[1]), L.yaxis.l2p(gd._fullData[0].y[1])];")
    drag = dash_duo.driver.find_element(By.CSS_SELECTOR, "#emb-map .nsewdrag")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", drag)
    x, y = dash_duo.driver.execute_script(where)
    ActionChains(dash_duo.driver).move_to_element_with_offset(drag, int(x), int(y)).move_by_offset(1, 0).perform()
    _wait(dash_duo, lambda d: f"/img/{run.name}/" in (d.find_element(By.ID, "emb-hover-img").get_attribute("src")
                                                      or ""), "hover shows no thumbnail")
    # a confused pair chosen in the errors view is ringed on the map
    _open_tab(dash_duo, "Confusion & gallery")
    _wait(dash_duo, lambda d: d.find_elements(By.CSS_SELECTOR, ".pair-dir"), "no confused pairs")
    dash_duo.find_elements(".pair-dir")[0].click()
    _wait(dash_duo, lambda d: "→" in d.find_element(By.ID, "gallery-title").text, "pair not selected")
    _open_tab(dash_duo, "Embedding map")
    last = "const gd = document.querySelector('#emb-map .js-plotly-plot'); return gd && gd.data && " \
           "gd.data.length ? gd.data[gd.data.length - 1].name : '';"
    _wait(dash_duo, lambda d: (d.execute_script(last) or "").startswith("true "), "the cell is not ringed")
    assert "Ringed" in dash_duo.find_element("#emb-ring").text
    assert _severe(dash_duo) == []


# ------------------------------------------------------------------ crafted callback requests

VALID = {("run-select", "value"): "digits-demo", ("emb-projection", "value"): "pca", ("emb-colour", "value"): "true",
         ("view-tabs", "value"): "embedding_map", ("emb-page", "data"): 0, ("emb-prev", "n_clicks"): 0,
         ("emb-next", "n_clicks"): 0, ("emb-precompute-poll", "disabled"): True}
CRAFTED = {  # (callback output, input) -> [(value, a fragment of the answer)]
    ("emb-map", "emb-projection"): [("tsne", "'tsne'"), (5, "5")],
    ("emb-map", "emb-colour"): [("bogus", "'bogus'"), (["true"], "['true']")],
    ("emb-map", "run-select"): [("nope", "unknown run 'nope'")],
    ("emb-gallery", "emb-selection"): [({"run": "digits-demo", "indices": [10 ** 9]}, "1000000000"),
                                       ({"run": "digits-demo", "indices": "abc"}, "map selection"),
                                       ({"run": "digits-demo", "indices": [-1]}, "-1"), ("abc", "'abc'")],
    ("emb-gallery", "emb-page"): [("x", "'x'")],
    ("emb-detail", "emb-chosen"): [({"run": "digits-demo", "index": -1}, "-1"), ({"run": "x", "index": 0}, "'x'")],
    ("emb-neighbours", "emb-chosen"): [({"run": "digits-demo", "index": 10 ** 6}, "1000000")],
    ("detail-neighbours", "selected-image"): [({"run": "digits-demo", "index": 2.5}, "2.5")],
    ("xp-neighbours", "xp-image"): [({"kind": "upload", "run": "digits-demo", "pixels": "!!"}, "upload it again")],
}


def test_crafted_requests_are_answered_in_words(demo_store):
    app = create_app(store=demo_store)
    client = app.server.test_client()
    deps = client.get("/_dash-dependencies").get_json()
    checked = 0
    for dep in deps:
        if dep.get("clientside_function"):
            continue
        first = dep["output"].strip(".").split("...")[0].split(".")[0]
        for spec in dep["inputs"] + dep["state"]:
            for value, fragment in CRAFTED.get((first, spec["id"]), []):
                def entry(s):
                    key = (s["id"], s["property"])
                    tab = "explain" if first == "xp-neighbours" and key == ("view-tabs", "value") else None
                    return {**s, "value": value if s is spec else tab or VALID.get(key)}
                parts = [{"id": p.rsplit(".", 1)[0], "property": p.rsplit(".", 1)[1]}
                         for p in dep["output"].strip(".").split("...")]
                payload = {"output": dep["output"], "outputs": parts if dep["output"].startswith("..") else parts[0],
                           "changedPropIds": [f"{spec['id']}.{spec['property']}"],
                           "inputs": [entry(s) for s in dep["inputs"]], "state": [entry(s) for s in dep["state"]]}
                r = client.post("/_dash-update-component", json=payload)
                text = r.get_data(as_text=True)
                assert r.status_code == 200 and fragment in text and "internal error" not in text, (
                    first, spec["id"], value, r.status_code, text[:300])
                checked += 1
    assert checked == sum(map(len, CRAFTED.values()))


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(-3, 8), max_size=12),
                 st.fixed_dictionaries({"run": st.sampled_from(["digits-demo", "other", 5]),
                                        "indices": st.one_of(st.lists(st.one_of(st.integers(-3, 400), st.floats(),
                                                                                st.text(max_size=2)), max_size=12),
                                                             st.text(max_size=3))})))
def test_map_selection_parser_returns_valid_indices_or_refuses(value):
    run = _DEMO
    try:
        got = inputs.map_selection(value, run)
    except inputs.BadInput as e:
        assert str(e)
        return
    assert got is None or (got == sorted(set(got)) and all(type(i) is int and 0 <= i < len(run.labels) for i in got))


def test_image_detail_and_upload_result_list_the_nearest_training_images(demo_store):
    """Through the callbacks, as the page asks: the errors view's detail (selected-image) and an upload in the
    explanations view (xp-image) both show the 8 training images nearest to test image 42."""
    import base64
    import json
    import re

    from xai_dashboard.embedding_space import neighbours_of

    run = demo_store.get(None)
    want = neighbours_of(run, test_index=42)[0].index.tolist()
    upload = {"kind": "upload", "run": run.name, "name": "x.png", "shape": list(run.images.shape[1:]),
              "pixels": base64.b64encode(np.ascontiguousarray(run.images[42]).tobytes()).decode()}
    client = create_app(store=demo_store).server.test_client()
    asks = (("detail-neighbours.children", [("selected-image", "data", {"run": run.name, "index": 42})]),
            ("xp-neighbours.children", [("xp-image", "data", upload), ("explain-opened", "data", 1)]))
    states = {"detail-neighbours.children": [], "xp-neighbours.children": [("view-tabs", "value", "explain")]}
    for output, inputs_ in asks:
        payload = {"output": output, "outputs": {"id": output.split(".")[0], "property": "children"},
                   "changedPropIds": [f"{inputs_[0][0]}.{inputs_[0][1]}"],
                   "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs_],
                   "state": [{"id": i, "property": p, "value": v} for i, p, v in states[output]]}
        r = client.post("/_dash-update-component", json=payload)
        text = json.dumps(r.get_json())  # Dash escapes "/" in its answer
        found = [int(i) for i in re.findall(rf"/img/{run.name}/train/(\d+)\.png", text)]
        assert r.status_code == 200 and found == want, (output, found, want)
