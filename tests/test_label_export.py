"""The label-issues gallery's CSV (the digits demo's noisier twin, where cleanlab flags 51 of 360 images; the
demo itself has none): exactly the images cleanlab flags, ranked by the
self-confidence score's definition, each with its suggested label and its review as saved in the reviews file;
"hide reviewed" leaves the reviewed ones out and keeps every other image's rank."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from cleanlab.filter import find_label_issues

from tests.test_callback_inputs import TWIN, twin_store  # noqa: F401
from tests.test_label_issues import _call
from xai_dashboard.reviews import ReviewStore

COLUMNS = ["index", "file", "label", "prediction", "confidence", "p(true)", "rank", "suggested", "score", "review",
           "reviewed label"]


@pytest.fixture
def labels_app(twin_store, tmp_path, monkeypatch):  # noqa: F811
    from xai_dashboard.app import create_app

    monkeypatch.setenv("XAI_REVIEWS_DIR", str(tmp_path))
    app = create_app(store=twin_store)
    app.server.test_client().get("/")
    return app, twin_store.get(TWIN)


def _csv(status: int, text: str) -> tuple[pd.DataFrame, str]:
    """The CSV (and file name) a ``dcc.Download`` answer carries."""
    assert status == 200, text[:300]
    data = json.loads(text)["response"]["lbl-download"]["data"]
    names = dict.fromkeys(["label", "prediction", "suggested", "reviewed label"], str)  # the digits' are "0".."9"
    return pd.read_csv(io.StringIO(data["content"]), keep_default_na=False, dtype=names), data["filename"]


def _export(app, run, hide: list[str]):
    return _csv(*_call(app, "lbl-download.data", {"lbl-export.n_clicks": 1, "run-select.value": run.name,
                                                  "lbl-hide.value": hide}, "lbl-export.n_clicks"))


def test_label_issues_csv_is_cleanlabs_ranking_with_the_reviews(labels_app):
    app, run = labels_app
    labels, probs = run.labels, run.probs
    flagged = np.flatnonzero(find_label_issues(labels, probs, n_jobs=1))  # cleanlab's default: prune by noise rate
    assert len(flagged) >= 4, "the run must have label issues for this test to mean anything"
    frame, name = _export(app, run, [])
    assert name == f"{run.name}-label-issues-all.csv" and list(frame.columns) == COLUMNS
    idx = frame["index"].to_numpy()
    assert sorted(idx) == flagged.tolist() and frame["rank"].tolist() == list(range(1, len(idx) + 1))
    given = labels[idx]
    names = np.asarray(run.class_names)
    # self-confidence (Northcutt et al.): the model's probability of the given label; most suspicious first
    assert np.allclose(frame["score"], probs[idx, given], atol=1e-6) and np.all(np.diff(frame["score"]) >= -1e-9)
    assert frame["label"].tolist() == names[given].tolist()
    others = probs[idx].copy()
    others[np.arange(len(idx)), given] = -1
    assert frame["suggested"].tolist() == names[others.argmax(1)].tolist()  # the likeliest other class
    assert (frame["suggested"] != frame["label"]).all()
    assert frame["prediction"].tolist() == names[probs[idx].argmax(1)].tolist()
    assert set(frame["review"]) == {""} and set(frame["reviewed label"]) == {""}

    # three reviews of flagged images and one of an image cleanlab does not flag
    store = ReviewStore.for_run(run)
    a, b, c = (int(i) for i in idx[[0, 1, 3]])
    unflagged = int(np.setdiff1d(np.arange(len(labels)), flagged)[0])
    for i, verdict, label in ((a, "wrong", 2), (b, "fine", None), (c, "unsure", None), (unflagged, "fine", None)):
        store.save(i, verdict, label)
    frame, _ = _export(app, run, [])
    assert frame["index"].tolist() == idx.tolist()  # the reviews change no rank
    reviewed = frame.set_index("index")
    assert [reviewed.loc[i, "review"] for i in (a, b, c)] == ["wrong", "fine", "unsure"]
    assert [reviewed.loc[i, "reviewed label"] for i in (a, b, c)] == [run.class_names[2], "", ""]
    assert (reviewed.drop([a, b, c])["review"] == "").all() and unflagged not in reviewed.index

    hidden, name = _export(app, run, ["hide"])
    assert name == f"{run.name}-label-issues-unreviewed.csv"
    assert hidden["index"].tolist() == [i for i in idx.tolist() if i not in (a, b, c)]
    assert hidden["rank"].tolist() == [r for r, i in zip(range(1, len(idx) + 1), idx) if i not in (a, b, c)]


def test_label_issues_csv_with_an_unusable_reviews_file_says_so(labels_app):
    app, run = labels_app
    store = ReviewStore.for_run(run)
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_text("{oops")
    status, text = _call(app, "lbl-download.data", {"lbl-export.n_clicks": 1, "run-select.value": run.name,
                                                    "lbl-hide.value": ["hide"]}, "lbl-export.n_clicks")
    frame, _ = _csv(status, text)
    assert "Exported without reviews" in text and "not valid JSON" in text and set(frame["review"]) == {""}
    assert store.path.read_text() == "{oops"
    status, text = _call(app, "lbl-download.data", {"lbl-export.n_clicks": 1, "run-select.value": "nope",
                                                    "lbl-hide.value": []}, "lbl-export.n_clicks")
    assert status == 200 and "unknown run 'nope'" in text and "input-error" in text
