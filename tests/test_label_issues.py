"""Label issues (cleanlab), the reviews file and the corrected scoreboard (issue #10, section 1).

The ranking test uses the shipped cifar10-fast run's stored test probabilities and labels
(``predictions.npz``: no external data) with 5% of the labels flipped; the scoreboard test
recomputes a six-image case by hand; the reviews tests restart the store, race two writers
and feed it corrupt, foreign and newer files.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

from tests.conftest import CHECKPOINTS, ROOT
from xai_dashboard import corrected, label_issues
from xai_dashboard.reviews import FORMAT, VERSION, ReviewsError, ReviewStore
from xai_dashboard.store import softmax


@dataclass
class FakeRun:
    """The parts of a LoadedRun these functions read: labels, probabilities, classes, meta."""

    labels: np.ndarray
    probs: np.ndarray
    key: str
    fingerprint: str = "f00d"
    class_names: list = field(default_factory=lambda: ["a", "b", "c"])

    @property
    def preds(self):
        return self.probs.argmax(1)

    @property
    def meta(self):
        return {"weights_sha256": self.key, "dataset": {"fingerprint": self.fingerprint}}

    @property
    def run(self):  # run.run.path: where a stored summary would be; never used for reviewed labels
        return type("R", (), {"path": "/nonexistent"})()


def _flipped(run_name: str, fraction: float, seed: int):
    p = np.load(CHECKPOINTS / run_name / "predictions.npz")
    probs, labels = softmax(p["logits"]), p["label"].astype(np.int64)
    rng = np.random.default_rng(seed)
    flips = rng.choice(len(labels), round(fraction * len(labels)), replace=False)
    noisy = labels.copy()
    noisy[flips] = (labels[flips] + rng.integers(1, probs.shape[1], len(flips))) % probs.shape[1]
    return probs, noisy, flips


def test_ranking_finds_most_flipped_labels():
    """cifar10-fast's 10,000 stored test probabilities, 500 labels flipped (seed 0). Measured (the fast-recipe
    model shipped on 2026-11-30): 85.6% of the flips are among the first 500 images of the ranking (89.4% and
    86.8% with seeds 1 and 2), 86.4% among the 559 flagged; asserted: at least 80% and 80%."""
    probs, noisy, flips = _flipped("cifar10-fast", 0.05, seed=0)
    run = FakeRun(noisy, probs, key="cifar10-fast flipped seed 0",
                  class_names=[str(c) for c in range(10)])
    frame = label_issues.rank_label_issues(run)
    ranked = frame["index"].to_numpy()
    assert list(frame.columns) == ["index", "given", "suggested", "score"]
    recall_top_k = np.isin(flips, ranked[:len(flips)]).mean()
    assert recall_top_k >= 0.80, recall_top_k
    assert np.isin(flips, ranked).mean() >= 0.80
    # rank order: label quality ascending (most suspicious first); given = the noisy label; suggested differs
    quality = label_issues.label_quality(run)
    assert quality.shape == (10_000,) and 0 <= quality.min() and quality.max() <= 1
    assert np.all(np.diff(frame["score"].to_numpy()) >= 0)
    assert np.array_equal(frame["score"].to_numpy(), quality[ranked])
    assert np.array_equal(frame["given"].to_numpy(), noisy[ranked])
    assert np.all(frame["suggested"].to_numpy() != frame["given"].to_numpy())
    # most flips are suggested back to their true class
    p = np.load(CHECKPOINTS / "cifar10-fast" / "predictions.npz")
    found = frame[frame["index"].isin(flips)]
    assert (found["suggested"].to_numpy() == p["label"][found["index"].to_numpy()]).mean() > 0.8


def test_api_lists_issues_in_rank_order(demo_store):
    from xai_dashboard.app import create_app

    client = create_app(store=demo_store).server.test_client()
    run = demo_store.get(None)
    expected = label_issues.rank_label_issues(run)
    r = client.get(f"/api/label-issues?run={run.name}&limit=5")
    assert r.status_code == 200
    assert r.get_json() == [{"index": int(x.index), "given": run.class_names[int(x.given)],
                             "suggested": run.class_names[int(x.suggested)], "score": float(x.score)}
                            for x in expected.head(5).itertuples()]
    assert client.get("/api/label-issues?limit=0").status_code == 400
    assert "must be an integer" in client.get("/api/label-issues?limit=abc").get_json()["error"]
    assert client.get("/api/label-issues?run=nope").status_code == 404


# ---------------------------------------------------------------- the corrected scoreboard

def _small_run() -> FakeRun:
    # given labels 0 0 1 1 2 2; the model predicts 0 1 1 1 2 0
    probs = np.array([[.8, .1, .1], [.2, .7, .1], [.1, .8, .1], [.3, .6, .1], [.1, .2, .7], [.6, .2, .2]])
    return FakeRun(np.array([0, 0, 1, 1, 2, 2]), probs.astype(np.float32), key="small")


def test_corrected_scoreboard_equals_a_hand_recomputation(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_REVIEWS_DIR", str(tmp_path))
    run = _small_run()
    store = ReviewStore.for_run(run)
    store.save(1, "wrong", 1)    # given 0 -> 1 (the model said 1)
    store.save(4, "wrong", 1)    # given 2 -> 1 (the model said 2: now a mistake)
    store.save(5, "fine")        # kept: 2
    store.save(2, "unsure")      # kept: 1
    # reviewed labels 0 1 1 1 1 2; predictions 0 1 1 1 2 0
    assert corrected.effective_labels(run, store.load()).tolist() == [0, 1, 1, 1, 1, 2]
    p, note = corrected.predictions_for(run, "reviewed")
    assert note is None
    s = corrected.summary_for(p, ("a", "b", "c"), None)
    # by hand: rows = reviewed label, columns = prediction
    assert s.cm.tolist() == [[1, 0, 0], [0, 3, 1], [1, 0, 0]]
    assert s.overall["accuracy"] == pytest.approx(4 / 6)
    by_class = {r["class"]: r for r in s.per_class}
    # precision: a predicted for #0, #5 (true a, c) -> 1/2; b for #1-#3 all b -> 1; c for #4 (true b) -> 0
    assert [by_class[c]["precision"] for c in "abc"] == pytest.approx([0.5, 1.0, 0.0])
    # recall: a 1/1; b: #1-#4, three found -> 3/4; c: #5 missed -> 0
    assert [by_class[c]["recall"] for c in "abc"] == pytest.approx([1.0, 0.75, 0.0])
    # the original labels are untouched: accuracy 4/6 too, but another matrix
    p0, _ = corrected.predictions_for(run, "original")
    assert p0.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert corrected.summary_for(p, ("a", "b", "c"), None) is s  # memoised


# ---------------------------------------------------------------- the reviews file

def test_reviews_survive_a_restart(tmp_path):
    run = _small_run()
    ReviewStore.for_run(run, tmp_path).save(3, "wrong", 2)
    again = ReviewStore.for_run(run, tmp_path)  # a new process would build exactly this
    reviews = again.load()
    assert set(reviews) == {3} and reviews[3].verdict == "wrong" and reviews[3].label == 2
    data = json.loads(again.path.read_text())
    assert data["format"] == FORMAT and data["version"] == VERSION and data["dataset"] == "f00d"
    # another run on the same dataset shares the file; one on another dataset has its own
    twin = FakeRun(run.labels, run.probs, key="other weights")
    assert ReviewStore.for_run(twin, tmp_path).load() == reviews
    assert ReviewStore.for_run(FakeRun(run.labels, run.probs, key="x", fingerprint="beef"), tmp_path).load() == {}


WRITER = """
import sys
from pathlib import Path
from xai_dashboard.reviews import ReviewStore
store = ReviewStore(Path(sys.argv[1]), "f00d", 1000, ("a", "b", "c"))
for i in range(int(sys.argv[2]), int(sys.argv[2]) + 25):
    store.save(i, "wrong" if i % 2 else "fine", 1 if i % 2 else None)
"""


def test_two_concurrent_writers_lose_nothing(tmp_path):
    """Two processes and two threads save 25 reviews each at the same time: all 100 are in the file."""
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(start)], cwd=ROOT)
             for start in (0, 25)]
    store = ReviewStore(tmp_path, "f00d", 1000, ("a", "b", "c"))

    def write(start):
        for i in range(start, start + 25):
            store.save(i, "wrong" if i % 2 else "fine", 1 if i % 2 else None)

    threads = [threading.Thread(target=write, args=(start,)) for start in (50, 75)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [p.wait(60) for p in procs] == [0, 0]
    reviews = store.load()
    assert sorted(reviews) == list(range(100))
    assert all(reviews[i].verdict == ("wrong" if i % 2 else "fine") for i in range(100))
    assert not list(tmp_path.glob("*.tmp"))  # no temp file left behind


BAD_FILES = {
    "corrupt": ('{"format": "xai-dashboard label reviews", "version": 1, "datas', "not valid JSON"),
    "foreign": (json.dumps({"format": FORMAT, "version": 1, "dataset": "beef", "num_test": 6,
                            "class_names": ["a", "b", "c"], "reviews": {}}), "another dataset"),
    "newer": (json.dumps({"format": FORMAT, "version": VERSION + 1, "dataset": "f00d", "num_test": 6,
                          "class_names": ["a", "b", "c"], "reviews": {}, "new field": 1}), "newer xai-dashboard"),
    "not reviews": (json.dumps([1, 2, 3]), "not a label-reviews file"),
    "bad label": (json.dumps({"format": FORMAT, "version": 1, "dataset": "f00d", "num_test": 6,
                              "class_names": ["a", "b", "c"],
                              "reviews": {"2": {"verdict": "wrong", "label": 7, "at": "x"}}}), "out of range"),
    "no label": (json.dumps({"format": FORMAT, "version": 1, "dataset": "f00d", "num_test": 6,
                             "class_names": ["a", "b", "c"],
                             "reviews": {"2": {"verdict": "wrong", "at": "x"}}}), "malformed"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_unusable_reviews_file_is_reported_never_overwritten(tmp_path, monkeypatch, case):
    text, words = BAD_FILES[case]
    monkeypatch.setenv("XAI_REVIEWS_DIR", str(tmp_path))
    run = _small_run()
    store = ReviewStore.for_run(run)
    store.path.write_text(text)
    with pytest.raises(ReviewsError, match=words):
        store.load()
    with pytest.raises(ReviewsError, match=words):
        store.save(0, "fine")
    assert store.path.read_text() == text
    # the scoreboard carries on with the original labels and says why
    p, note = corrected.predictions_for(run, "reviewed")
    assert p.labels.tolist() == run.labels.tolist() and words in note and str(store.path) in note


# ---------------------------------------------------------------- the page's callbacks, as the browser calls them

def _call(app, output: str, values: dict, triggered: dict | str) -> tuple[int, str]:
    """POST the callback writing ``output`` with ``values`` ("id.prop" or a pattern list) and one trigger."""
    key = next(k for k in app.callback_map if output in k.strip(".").split("..."))
    spec = app.callback_map[key]
    outputs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]} for o in key.strip(".").split("...")]

    def arg(d):
        name = f"{d['id']}.{d['property']}"
        return values.get(name, []) if d["id"].startswith("{") else {**d, "value": values.get(name)}

    changed = triggered if isinstance(triggered, str) else json.dumps(triggered["id"], separators=(",", ":"),
                                                                     sort_keys=True) + ".n_clicks"
    body = {"output": key, "outputs": outputs if key.startswith("..") else outputs[0], "changedPropIds": [changed],
            "inputs": [arg({"id": d["id"], "property": d["property"]}) for d in spec["inputs"]],
            "state": [arg({"id": d["id"], "property": d["property"]}) for d in spec["state"]]}
    r = app.server.test_client().post("/_dash-update-component", json=body)
    return r.status_code, json.dumps(r.get_json(), ensure_ascii=False) if r.is_json else r.get_data(as_text=True)


@pytest.fixture
def labels_app(demo_store, tmp_path, monkeypatch):
    from xai_dashboard.app import create_app

    monkeypatch.setenv("XAI_REVIEWS_DIR", str(tmp_path))
    app = create_app(store=demo_store)
    app.server.test_client().get("/")
    return app, demo_store.get(None)


def _review(app, run, verdict, index, label=None, click=None):
    """A review button's click as its relay store (views.clicks) hands it to the server, or ``click`` as sent."""
    button = {"type": "lbl-review", "verdict": verdict, "index": index}
    dropdown = {"id": {"type": "lbl-class", "index": index}, "property": "value", "value": label}
    return _call(app, "reviews-stamp.data", {
        "lbl-review-click.data": {"id": button, "n_clicks": 1} if click is None else click,
        '{"index":["ALL"],"type":"lbl-class"}.value': [dropdown],
        "run-select.value": run.name, "reviews-stamp.data": 3}, "lbl-review-click.data")


def test_a_review_from_the_page_is_saved_and_bad_ones_are_refused_in_words(labels_app):
    app, run = labels_app
    status, text = _review(app, run, "wrong", 7, 4)
    assert status == 200 and "Saved: test image #7: label is wrong → 4" in text and '"data": 4' in text
    assert ReviewStore.for_run(run).load()[7].label == 4
    for verdict, index, label, words in (("bogus", 7, 4, "unknown review 'bogus'"), ("wrong", 10 ** 6, 4, "1000000"),
                                         ("wrong", 7, 99, "class 99"), ("fine", -1, None, "-1")):
        status, text = _review(app, run, verdict, index, label)
        assert status == 200 and words in text and "input-error" in text, text
    for click in ({"id": {"type": "lbl-item", "index": 3}, "n_clicks": 1}, {"id": 5}, "abc",
                  {"id": {"type": "lbl-review", "verdict": "fine", "index": 3}, "n_clicks": "1"}):
        status, text = _review(app, run, "fine", 3, click=click)
        assert status == 200 and "not a click on a 'lbl-review' button" in text and "input-error" in text, text
    assert list(ReviewStore.for_run(run).load()) == [7]


def test_a_corrupt_reviews_file_is_shown_in_the_page_which_keeps_working(labels_app):
    app, run = labels_app
    store = ReviewStore.for_run(run)
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_text("{oops")
    status, text = _call(app, "lbl-gallery.children", {"run-select.value": run.name, "view-tabs.value": "labels",
                                                       "lbl-hide.value": [], "lbl-page.data": 0}, "run-select.value")
    assert status == 200 and "not valid JSON" in text and "left as it is" in text and str(store.path) in text
    assert "Accuracy on the original labels" in text
    status, text = _review(app, run, "fine", 3)
    assert "Not saved" in text and "not valid JSON" in text and store.path.read_text() == "{oops"
    # the header's note and the overview say the original labels are shown, and why
    status, text = _call(app, "label-set-note.children", {"label-set.value": "reviewed",
                                                          "run-select.value": run.name}, "label-set.value")
    assert "showing the original labels" in text and "not valid JSON" in text
    status, text = _call(app, "overview-cards.children", {"label-set.value": "reviewed",
                                                          "run-select.value": run.name}, "label-set.value")
    assert status == 200 and "showing the original labels" in text and "Accuracy" in text
    status, text = _call(app, "overview-cards.children", {"label-set.value": "bogus",
                                                          "run-select.value": run.name}, "label-set.value")
    assert "unknown label set 'bogus'" in text
