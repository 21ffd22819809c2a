"""The stress view's CSVs on the digits demo's shipped stress.npz: a cell's pairs are exactly the images right
when clean and wrong when corrupted (straight from the stored arrays), most confidently broken first; the
heatmap's table is the accuracy of every corruption x severity, recounted. And no server callback of the
labels or stress view listens to pattern-matched buttons (views.clicks: why)."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from tests.test_label_issues import _call
from xai_dashboard.stress_file import SEVERITIES, load_stress


@pytest.fixture(scope="module")
def stress_app(demo_store):
    from xai_dashboard.app import create_app

    app = create_app(store=demo_store)
    app.server.test_client().get("/")
    run = demo_store.get(None)
    data, note = load_stress(run.run.path, run.meta)
    assert data is not None and note == "", note  # shipped complete with the demo
    return app, run, data


def _csv(output: str, status: int, text: str) -> tuple[pd.DataFrame, str]:
    assert status == 200, text[:300]
    data = json.loads(text)["response"][output]["data"]
    names = dict.fromkeys(["class", "label", "clean prediction", "corrupted prediction"], str)  # digits: "0".."9"
    return pd.read_csv(io.StringIO(data["content"]), keep_default_na=False, dtype=names), data["filename"]


def _pairs(app, run, cell, label="all"):
    return _call(app, "stress-download-pairs.data", {
        "stress-export-pairs.n_clicks": 1, "run-select.value": run.name, "stress-cell.data": cell,
        "stress-class.value": label}, "stress-export-pairs.n_clicks")


def _broken(data, c: int, s: int) -> np.ndarray:
    """Positions of the images right when clean and wrong under corruption ``c`` at severity index ``s``."""
    return np.flatnonzero((data["clean_pred"] == data["label"]) & (data["pred"][c, s] != data["label"]))


def test_a_cells_csv_lists_the_images_it_breaks(stress_app):
    app, run, data = stress_app
    names, corruptions = np.asarray(run.class_names), data["config"]["corruptions"]
    c, s = max(((c, s) for c in range(len(corruptions)) for s in range(len(SEVERITIES))),
               key=lambda cs: len(_broken(data, *cs)))
    pos = _broken(data, c, s)
    assert len(pos) > 24, "the busiest cell must fill more than one page of pairs"
    cell = {"corruption": corruptions[c], "severity": s + 1}
    frame, name = _csv("stress-download-pairs", *_pairs(app, run, cell))
    assert name == f"{run.name}-{corruptions[c]}-severity-{s + 1}-all_classes.csv"
    assert list(frame.columns) == ["index", "file", "label", "clean prediction", "clean p(true)",
                                   "corrupted prediction", "corrupted p(true)", "corruption", "severity"]
    assert sorted(frame["index"]) == sorted(data["index"][pos].tolist())  # every page, nothing else
    at = {int(i): p for p, i in enumerate(data["index"])}
    rows = np.array([at[i] for i in frame["index"]])
    assert frame["label"].tolist() == names[data["label"][rows]].tolist()
    assert (frame["clean prediction"] == frame["label"]).all()
    assert (frame["corrupted prediction"] != frame["label"]).all()
    assert frame["corrupted prediction"].tolist() == names[data["pred"][c, s, rows]].tolist()
    assert np.allclose(frame["clean p(true)"], data["clean_prob"][rows].astype(np.float64))
    assert np.allclose(frame["corrupted p(true)"], data["prob"][c, s, rows].astype(np.float64))
    fall = frame["clean p(true)"] - frame["corrupted p(true)"]
    assert np.all(np.diff(fall) <= 1e-6)  # the view's order: the largest fall of p(true) first
    assert set(frame["corruption"]) == {corruptions[c]} and set(frame["severity"]) == {s + 1}

    label = int(np.bincount(data["label"][pos]).argmax())
    one, _ = _csv("stress-download-pairs", *_pairs(app, run, cell, label))
    assert sorted(one["index"]) == sorted(data["index"][pos[data["label"][pos] == label]].tolist())

    status, text = _pairs(app, run, None)
    assert status == 200 and "Click a severity cell of the heatmap first" in text and "input-error" in text
    status, text = _pairs(app, run, {"corruption": "nope", "severity": 1})
    assert status == 200 and "'nope'" in text and "input-error" in text


@pytest.mark.parametrize("label", ["all", 3])
def test_the_heatmap_csv_is_every_cells_accuracy(stress_app, label):
    app, run, data = stress_app
    frame, name = _csv("stress-download-table", *_call(app, "stress-download-table.data", {
        "stress-export-table.n_clicks": 1, "run-select.value": run.name, "stress-class.value": label},
        "stress-export-table.n_clicks"))
    corruptions = data["config"]["corruptions"]
    scope = "all classes" if label == "all" else run.class_names[label]
    assert name == f"{run.name}-stress-{scope.replace(' ', '_')}.csv"
    assert frame["corruption"].tolist() == [*corruptions, "mean"] and set(frame["class"]) == {scope}
    keep = np.ones(len(data["label"]), bool) if label == "all" else data["label"] == label
    acc = np.array([[np.mean(data["pred"][c, s, keep] == data["label"][keep]) for s in range(len(SEVERITIES))]
                    for c in range(len(corruptions))])
    grid = frame[[f"severity {k}" for k in SEVERITIES]].to_numpy(dtype=np.float64)
    assert np.allclose(grid[:-1], acc) and np.allclose(grid[-1], acc.mean(0))
    assert np.allclose(frame["mean"][:-1], acc.mean(1)) and np.isclose(frame["mean"].iloc[-1], acc.mean())


def test_no_labels_or_stress_callback_listens_to_pattern_matched_buttons(stress_app):
    app = stress_app[0]
    modules = ("xai_dashboard.views.labels", "xai_dashboard.views.stress")
    patterned = [spec["callback"].__name__ for spec in app.callback_map.values()
                 if "callback" in spec and spec["callback"].__module__ in modules
                 and any(i["id"].startswith("{") for i in spec["inputs"])]
    assert patterned == []
    served = {spec["callback"].__name__ for spec in app.callback_map.values()
              if "callback" in spec and spec["callback"].__module__ in modules}
    assert {"save_review", "gradcam"} <= served  # they are still there, behind their relay stores
