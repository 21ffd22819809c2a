"""CSV exports: a confusion cell's CSV holds exactly that cell's images in the gallery's order, a
comparison set's CSV is :func:`analysis.compare`'s set, a threshold's misses are the misses; the
download callbacks answer with that CSV over HTTP."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from tests.test_callback_inputs import DEMO, TWIN, body, client_and_deps, make_twin, post, twin_store  # noqa: F401
from xai_dashboard import analysis, export, summaries

HEADER = ["index", "file", "label", "prediction", "confidence", "p(true)"]


def _dep(deps, output_prefix: str) -> dict:
    return next(d for d in deps if d["output"].lstrip(".").startswith(output_prefix))


def _csv(response) -> tuple[pd.DataFrame, str]:
    """The CSV a ``dcc.Download`` answer carries, and its file name."""
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    out = response.get_json()["response"]
    data = next(v["data"] for v in out.values() if "data" in v)
    assert data["base64"] is False
    return pd.read_csv(io.StringIO(data["content"]), keep_default_na=False), data["filename"]


def _busiest_mistake(run) -> tuple[int, int]:
    cm = analysis.confusion(run.labels, run.preds, len(run.class_names))
    np.fill_diagonal(cm, 0)
    t, p = np.unravel_index(np.argmax(cm), cm.shape)
    assert cm[t, p] > 1, "the twin must make repeated mistakes for this test to mean anything"
    return int(t), int(p)


@pytest.mark.parametrize("sort_by", ["confidence", "loss", "index"])
def test_cell_csv_has_exactly_that_cells_rows_in_gallery_order(client_and_deps, twin_store, sort_by):  # noqa: F811
    app, client, deps = client_and_deps
    run = twin_store.get(TWIN)
    t, p = _busiest_mistake(run)
    selection = {"run": TWIN, "cells": [[t, p]]}
    override = {("run-select", "value"): TWIN, ("gallery-selection", "data"): selection,
                ("gallery-sort", "value"): sort_by}
    frame, name = _csv(post(client, body(_dep(deps, "gallery-download"), "errors", override,
                                         "gallery-export.n_clicks")))
    assert list(frame.columns) == HEADER + ["loss", "margin"]
    expected = np.flatnonzero((run.labels == t) & (run.preds == p))  # the cell, straight from numpy
    assert sorted(frame["index"]) == expected.tolist()
    # The gallery shows the same images in the same order (its first page).
    gallery = post(client, body(_dep(deps, "gallery.children"), "errors", override, "gallery-sort.value"))
    shown = [item["props"]["data-index"] for item in gallery.get_json()["response"]["gallery"]["children"]]
    assert frame["index"].tolist()[:len(shown)] == shown and len(shown) == min(len(expected), analysis.PAGE_SIZE)
    names = run.class_names
    assert set(frame["label"].astype(str)) == {names[t]} and set(frame["prediction"].astype(str)) == {names[p]}
    idx = frame["index"].to_numpy()
    assert np.allclose(frame["confidence"], run.probs[idx, p]) and np.allclose(frame["p(true)"], run.probs[idx, t])
    assert np.allclose(frame["loss"], -np.log(run.probs[idx, t]), rtol=1e-5)
    assert (frame["file"] == "").all()  # digits: no file list
    assert name == f"{TWIN}-{names[t]}-as-{names[p]}.csv"


def test_every_mistake_csv_is_every_mistake(twin_store):  # noqa: F811
    run = twin_store.get(TWIN)
    frame = export.gallery_frame(run, None, "margin")
    assert sorted(frame["index"]) == np.flatnonzero(run.labels != run.preds).tolist()
    assert (np.diff(frame["margin"].to_numpy()) >= -1e-7).all()  # smallest margin first, as the gallery sorts


@pytest.mark.parametrize("key", ["fixed", "introduced", "both"])
def test_comparison_set_csv_matches_analysis_compare(client_and_deps, twin_store, key):  # noqa: F811
    app, client, deps = client_and_deps
    a, b = twin_store.get(DEMO), twin_store.get(TWIN)
    frame, name = _csv(post(client, body(_dep(deps, "compare-download"), "compare", {},
                                         f"compare-{key}-export.n_clicks")))
    sets = analysis.compare(analysis.predictions_of(a), analysis.predictions_of(b))
    assert len(sets[key]) > 0, "the twin must differ from the demo in every set"
    assert sorted(frame["index"]) == sets[key].tolist()
    assert list(frame.columns) == ["index", "file", "label", "prediction A", "confidence A", "p(true) A",
                                   "prediction B", "confidence B", "p(true) B"]
    idx = frame["index"].to_numpy()
    assert frame["prediction A"].astype(str).tolist() == [a.class_names[c] for c in a.preds[idx]]
    assert frame["prediction B"].astype(str).tolist() == [b.class_names[c] for c in b.preds[idx]]
    assert idx.tolist() == export.comparison_set(a, b, key).tolist()  # the gallery's order
    assert name == f"{DEMO}-{TWIN}-{key}.csv"


@pytest.mark.parametrize("kind", ["fn", "fp"])
def test_threshold_misses_and_false_alarms(twin_store, kind):  # noqa: F811
    run = twin_store.get(TWIN)
    positive, t = 3, 0.3
    frame = export.threshold_frame(run, positive, t, kind)
    y, score = run.labels == positive, run.probs[:, positive]
    expected = np.flatnonzero(y & (score < t)) if kind == "fn" else np.flatnonzero(~y & (score >= t))
    assert len(expected) and sorted(frame["index"]) == expected.tolist()
    assert list(frame.columns) == HEADER + ["p(positive)"]
    order = frame["p(positive)"].to_numpy()
    assert (np.diff(order) >= 0).all() if kind == "fn" else (np.diff(order) <= 0).all()


def test_per_class_csv_is_the_table_unrounded(client_and_deps, twin_store):  # noqa: F811
    app, client, deps = client_and_deps
    frame, name = _csv(post(client, body(_dep(deps, "class-download"), "overview", {}, "class-export.n_clicks")))
    rows = summaries.summary_of(twin_store.get(DEMO)).per_class
    frame["class"] = frame["class"].astype(str)  # digit class names read back as numbers
    assert frame.to_dict("records") == pd.DataFrame(rows).to_dict("records") and name == f"{DEMO}-per-class.csv"


def test_file_column_comes_from_the_runs_file_list(tmp_path):
    from trainer.rundir import write_test_files
    from xai_dashboard.store import RunStore

    folder = make_twin(tmp_path / "listed")
    n = 360
    write_test_files(folder, [{"path": f"test/c{i % 10}/img{i}.png", "label": i % 10, "size": 1} for i in range(n)])
    run = RunStore.from_dirs([folder]).get("listed")
    frame = export.image_frame(run, np.array([5, 0, 359]))
    assert frame["file"].tolist() == ["test/c5/img5.png", "test/c0/img0.png", "test/c9/img359.png"]
    write_test_files(folder, [{"path": "only-one.png", "label": 0, "size": 1}])  # not this run's list
    assert (export.image_frame(run, np.array([1]))["file"] == "").all()


def test_filenames_are_safe():
    assert export.filename("../../etc", "a b/c", "fn-at-0.5") == "etc-a_b_c-fn-at-0.5.csv"
