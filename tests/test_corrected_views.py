"""The threshold view and "Compare runs" on the reviewed labels (issue #10: the corrected scoreboard).

A temporary ``$XAI_REVIEWS_DIR`` holds a reviews file that relabels a few test images of run A
("label is wrong -> X"), plus a "fine" and a "not sure" review that keep their labels. Every number
the two views show, through their real Dash callbacks, is compared with scikit-learn on labels
relabelled here by hand from that list of reviews (not by :mod:`xai_dashboard.corrected`); with
the switch off, with scikit-learn on the original labels. Runs: the shipped digits demo (10
classes) and a twin on its test images, and pairs of honest image-folder runs of 2, 3 and 100 classes.
"""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score, average_precision_score, balanced_accuracy_score, confusion_matrix, f1_score, matthews_corrcoef,
    precision_score, recall_score, roc_auc_score,
)

from tests.test_callback_inputs import DEMO, ROOT, TWIN, make_twin
from tests.test_class_counts import array, call, class_names, make_image_folder, make_run, noisy_logits
from xai_dashboard.analysis import PAGE_SIZE
from xai_dashboard.app import create_app
from xai_dashboard.reviews import REVIEWS_ENV, ReviewStore
from xai_dashboard.store import RunStore

SETS = ("fixed", "introduced", "both")


@pytest.fixture(scope="module", params=[DEMO, 2, 3, 100])
def pair(request, tmp_path_factory):
    """``(store, app)`` of two comparable runs: the digits demo and its twin, or K-class image-folder runs."""
    if request.param == DEMO:
        runs = [ROOT / "checkpoints" / DEMO, make_twin(tmp_path_factory.mktemp("twin") / TWIN)]
    else:
        k = request.param
        root = tmp_path_factory.mktemp(f"classes{k}")
        test = [max(1, 60 // (i + 1)) for i in range(k)] if k <= 10 else [1 + i % 7 for i in range(k)]
        spec = make_image_folder(root / "data", class_names(k), [2] * k, test)
        runs = [make_run(root / "weak", spec, lambda y, k: noisy_logits(y, k, 1.0, seed=1)),
                make_run(root / "better", spec, lambda y, k: noisy_logits(y, k, 2.5, seed=2))]
    store = RunStore.from_dirs(runs)
    assert len(store.names) == 2 and store.comparable(store.names[0]) == store.names[1:], store.banner
    return store, create_app(store=store)


def review(run, folder) -> tuple[np.ndarray, int]:
    """Save reviews of a few of ``run``'s test images in ``folder``; return ``(labels relabelled by hand, the
    class they touch most)``: three mistakes relabelled to the model's answer, two images of that answer's
    class moved to the next class, one image reviewed "fine" and one "not sure" (both kept)."""
    store, k = ReviewStore.for_run(run, folder), len(run.class_names)
    y = np.array(run.labels, copy=True)
    mistakes = np.flatnonzero(run.preds != run.labels)[:3]
    positive = int(run.preds[mistakes[0]])
    moved = np.setdiff1d(np.flatnonzero(run.labels == positive), mistakes)[:2]
    for i, label in [*((i, int(run.preds[i])) for i in mistakes), *((i, (positive + 1) % k) for i in moved)]:
        store.save(int(i), "wrong", label)
        y[i] = label
    kept = np.setdiff1d(np.arange(len(y)), np.concatenate([mistakes, moved]))[:2]
    store.save(int(kept[0]), "fine")
    store.save(int(kept[1]), "unsure")
    assert np.count_nonzero(y != run.labels) == 5
    return y, positive


def number(text: str) -> float:
    """A card's value as a number: ``"0.812"`` or ``"81.25%"``."""
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def hand_threshold(y: np.ndarray, scores: np.ndarray, t: float) -> dict:
    """The threshold cards' figures from scikit-learn: ``y`` bool ``(N,)``, ``scores`` ``(N,)``."""
    pred = scores >= t
    return {"cm": confusion_matrix(y, pred, labels=[False, True]).tolist(),
            "Precision": precision_score(y, pred, zero_division=0), "Recall": recall_score(y, pred),
            "F1": f1_score(y, pred, zero_division=0), "Balanced accuracy": balanced_accuracy_score(y, pred),
            "MCC": matthews_corrcoef(y, pred), "Flagged positive": pred.mean(),
            "ROC-AUC": roc_auc_score(y, scores), "PR-AUC": average_precision_score(y, scores)}


def shown_text(component: dict) -> str:
    """The text of a rendered ``html.P``."""
    return component["props"]["children"]


def test_threshold_view_follows_the_label_switch(pair, tmp_path, monkeypatch):
    store, app = pair
    monkeypatch.setenv(REVIEWS_ENV, str(tmp_path))
    run = store.get(store.names[0])
    reviewed, positive = review(run, tmp_path)
    scores = run.probs[:, positive]
    base = {"threshold-slider.value": 0.3, "threshold-class.value": positive, "run-select.value": run.name,
            "view-tabs.value": "threshold", "chosen-thresholds.data": {}}
    shown = {}
    for label_set, labels in (("reviewed", reviewed), ("original", run.labels)):
        resp = call(app, "threshold-cards.children", {**base, "label-set.value": label_set})
        want = hand_threshold(labels == positive, scores, 0.3)
        cm = array(resp["threshold-cm"]["figure"]["data"][0]["customdata"])[:, :, 0]
        assert cm.tolist() == want["cm"], label_set
        cards = {c["props"]["children"][0]["props"]["children"]: c["props"]["children"][1]["props"]["children"]
                 for c in resp["threshold-cards"]["children"]}
        for label in ("Precision", "Recall", "F1", "MCC"):  # shown with 3 decimals
            assert number(cards[label]) == pytest.approx(want[label], abs=5e-4 + 1e-12), (label_set, label)
        for label in ("Balanced accuracy", "Flagged positive"):  # shown as a percentage with 2 decimals
            assert number(cards[label]) == pytest.approx(want[label], abs=5e-5 + 1e-12), (label_set, label)
        auc, ap = (float(v) for v in cards["ROC-AUC · PR-AUC"].split(" · "))
        assert (auc, ap) == pytest.approx((want["ROC-AUC"], want["PR-AUC"]), abs=5e-4 + 1e-12), label_set
        shown[label_set] = (cm.tolist(), shown_text(resp["threshold-labels"]["children"]))
    assert shown["reviewed"][0] != shown["original"][0]  # the reviews move images in and out of the class
    assert shown["reviewed"][1] == "Scored on the reviewed labels: 5 changed."
    assert shown["original"][1] == "Scored on the original labels."

    # "Set threshold" for a target recall of 80% reaches it on the reviewed labels: the largest such threshold
    # is the score of the ceil(0.8 P)-th best scored positive (the slider may show a rounder one that
    # flags exactly the same images)
    chosen = call(app, "threshold-slider.value", {
        "threshold-class.value": positive, "run-select.value": run.name, "threshold-recall.value": 0.8,
        "threshold-cost.value": 5, "threshold-by-recall.n_clicks": 1, "label-set.value": "reviewed"},
        triggered="threshold-by-recall.n_clicks")["threshold-slider"]["value"]
    ranked = np.sort(scores[reviewed == positive])[::-1]
    needed = -(-4 * len(ranked) // 5)
    assert np.array_equal(scores >= chosen, scores >= ranked[needed - 1])

    # the CSV of misses is on the labels in use: the positives (by that label set) scored under 0.3
    for label_set, labels in (("reviewed", reviewed), ("original", run.labels)):
        sent = call(app, "threshold-download.data", {**base, "label-set.value": label_set,
                                                     "threshold-export-fn.n_clicks": 1},
                    triggered="threshold-export-fn.n_clicks")["threshold-download"]["data"]
        rows = pd.read_csv(io.StringIO(sent["content"]), dtype={"label": str}, keep_default_na=False)
        assert set(rows["index"]) == set(np.flatnonzero((labels == positive) & (scores < 0.3)).tolist()), label_set
        assert (rows["label"] == run.class_names[positive]).all()


def hand_sets(labels: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, set[int]]:
    wrong_a, wrong_b = pred_a != labels, pred_b != labels
    return {"fixed": set(np.flatnonzero(wrong_a & ~wrong_b).tolist()),
            "introduced": set(np.flatnonzero(~wrong_a & wrong_b).tolist()),
            "both": set(np.flatnonzero(wrong_a & wrong_b).tolist())}


def table_rows(component: dict) -> list[list[str]]:
    """The cells of the compare view's threshold table (header row dropped)."""
    table = component["props"]["children"][1]
    return [[td["props"]["children"] for td in tr["props"]["children"]] for tr in table["props"]["children"][1:]]


def test_compare_view_follows_the_label_switch(pair, tmp_path, monkeypatch):
    store, app = pair
    monkeypatch.setenv(REVIEWS_ENV, str(tmp_path))
    a, b = store.names
    ra, rb = store.get(a), store.get(b)
    reviewed, positive = review(ra, tmp_path)  # one test set: B shares A's reviews file
    k, names = len(ra.class_names), ra.class_names
    chosen = {a: {"positive": positive, "threshold": 0.3}}  # B: the default 0.5
    base = {"compare-a.value": a, "compare-b.value": b, "view-tabs.value": "compare", "chosen-thresholds.data": chosen}
    for label_set, labels in (("reviewed", reviewed), ("original", ra.labels)):
        values = {**base, "label-set.value": label_set}
        resp = call(app, "compare-summary.children", values)
        note, headline = (shown_text(p) for p in resp["compare-summary"]["children"][:2])
        assert note == ("Scored on the reviewed labels: 5 changed." if label_set == "reviewed"
                        else "Scored on the original labels.")
        acc = re.search(r"Accuracy ([\d.]+)% → ([\d.]+)%.*balanced accuracy ([\d.]+)% → ([\d.]+)%", headline)
        want = [accuracy_score(labels, ra.preds), accuracy_score(labels, rb.preds),
                balanced_accuracy_score(labels, ra.preds), balanced_accuracy_score(labels, rb.preds)]
        assert [float(v) / 100 for v in acc.groups()] == pytest.approx(want, abs=5e-5 + 1e-12), label_set

        bars = resp["compare-accuracy"]["figure"]["data"]
        for bar, run in zip(bars, (ra, rb)):
            # a class with no images under this label set has no accuracy: n/a (NaN, sent as null), not 0
            want = recall_score(labels, run.preds, labels=range(k), average=None, zero_division=np.nan)
            assert array(bar["y"]).astype(float) == pytest.approx(want, nan_ok=True), (label_set, run.name)
        cm = lambda run: confusion_matrix(labels, run.preds, labels=range(k))  # noqa: E731
        diff = array(resp["compare-cm-diff"]["figure"]["data"][0]["customdata"])
        assert diff.tolist() == (cm(rb) - cm(ra)).tolist(), label_set

        rows = table_rows(resp["compare-thresholds"]["children"])
        for row, run, t in zip(rows, (ra, rb), (0.3, 0.5)):
            y, pred = labels == positive, run.probs[:, positive] >= t
            assert row[2] == f"{int(np.sum(y & pred)):,} of {int(y.sum()):,}", (label_set, run.name)
            assert float(row[3]) == pytest.approx(recall_score(y, pred), abs=5e-4 + 1e-12)
            assert float(row[4]) == pytest.approx(precision_score(y, pred, zero_division=0), abs=5e-4 + 1e-12)

        sets = hand_sets(labels, ra.preds, rb.preds)
        for key in SETS:
            got = call(app, f"compare-{key}.children", values, triggered="compare-a.value")
            assert got[f"compare-{key}-count"]["children"] == str(len(sets[key])), (label_set, key)
            items = [i for i in got[f"compare-{key}"]["children"] if "data-index" in i["props"]]
            shown = [i["props"]["data-index"] for i in items]
            assert len(shown) == min(len(sets[key]), PAGE_SIZE) and set(shown) <= sets[key], (label_set, key)
            truth = [i["props"]["children"][1]["props"]["children"][0]["props"]["children"] for i in items]
            assert truth == [names[labels[j]] for j in shown], (label_set, key)
            sent = call(app, "compare-download.data", {**values, f"compare-{key}-export.n_clicks": 1},
                        triggered=f"compare-{key}-export.n_clicks")["compare-download"]["data"]
            rows = pd.read_csv(io.StringIO(sent["content"]), dtype={"label": str}, keep_default_na=False)
            assert set(rows["index"]) == sets[key] and rows["index"].tolist()[:len(shown)] == shown, (label_set, key)
            assert rows["label"].tolist() == [names[labels[j]] for j in rows["index"]], (label_set, key)
    assert any(hand_sets(reviewed, ra.preds, rb.preds)[s] != hand_sets(ra.labels, ra.preds, rb.preds)[s]
               for s in SETS)


def test_an_unusable_reviews_file_shows_the_original_numbers_and_says_why(pair, tmp_path, monkeypatch):
    store, app = pair
    monkeypatch.setenv(REVIEWS_ENV, str(tmp_path))
    run = store.get(store.names[0])
    ReviewStore.for_run(run).path.write_text("{not json")
    positive = 0
    values = {"threshold-slider.value": 0.5, "threshold-class.value": positive, "run-select.value": run.name,
              "view-tabs.value": "threshold", "chosen-thresholds.data": {}, "label-set.value": "reviewed"}
    resp = call(app, "threshold-cards.children", values)
    assert "Reviewed labels unavailable" in shown_text(resp["threshold-labels"]["children"])
    assert resp["threshold-labels"]["children"]["props"]["className"] == "warning"
    cm = array(resp["threshold-cm"]["figure"]["data"][0]["customdata"])[:, :, 0]
    assert cm.tolist() == hand_threshold(run.labels == positive, run.probs[:, positive], 0.5)["cm"]
    resp = call(app, "compare-summary.children", {"compare-a.value": run.name, "compare-b.value": store.names[1],
                                                  "view-tabs.value": "compare", "label-set.value": "reviewed"})
    assert "not valid JSON" in json.dumps(resp["compare-summary"]["children"])
