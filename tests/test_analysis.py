"""Pure error-analysis functions, checked against scikit-learn on real run predictions.

Every run directory under checkpoints/ (and a local runs/ folder) is used; the
stored ``label`` array in predictions.npz means no images (and no Dash) are needed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)

from trainer.rundir import RunDirError, find_runs, load_run
from xai_dashboard import analysis, figures, summaries
from xai_dashboard.store import softmax

ROOT = Path(__file__).resolve().parent.parent
RUN_DIRS = [d for root in (ROOT / "checkpoints", ROOT / "runs") if root.is_dir() for d in find_runs(root)]


@pytest.fixture(scope="module", params=RUN_DIRS, ids=[d.name for d in RUN_DIRS])
def pred(request) -> analysis.Predictions:
    try:
        run = load_run(request.param)
    except RunDirError as e:
        pytest.skip(f"run not usable right now: {e}")
    p = run.predictions
    return analysis.Predictions(f"{run.meta['weights_sha256']}:test", p["label"], softmax(p["logits"]))


def test_confusion_matches_sklearn(pred):
    k = pred.num_classes
    assert np.array_equal(analysis.confusion(pred.labels, pred.preds, k),
                          confusion_matrix(pred.labels, pred.preds, labels=np.arange(k)))


def test_cells_hold_exactly_their_images_and_partition_the_test_set(pred):
    k, n = pred.num_classes, len(pred.labels)
    cm = confusion_matrix(pred.labels, pred.preds, labels=np.arange(k))
    ci = analysis.cell_index(pred.labels, pred.preds, k)
    seen = []
    for i in range(k):
        for j in range(k):
            idx = ci.cell(i, j)
            assert len(idx) == cm[i, j]
            assert (pred.labels[idx] == i).all() and (pred.preds[idx] == j).all()
            assert (np.diff(idx) > 0).all()  # ascending inside a cell
            seen.append(idx)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(n))
    assert np.array_equal(np.sort(ci.errors()), np.flatnonzero(pred.labels != pred.preds))


def test_overall_metrics_match_sklearn(pred):
    k = pred.num_classes
    m = analysis.overall_metrics(pred.labels, pred.probs)
    assert m["accuracy"] == pytest.approx(accuracy_score(pred.labels, pred.preds))
    assert m["f1"] == pytest.approx(f1_score(pred.labels, pred.preds, average="macro", labels=np.arange(k)))
    if k > 3:
        assert m["top3"] == pytest.approx(top_k_accuracy_score(pred.labels, pred.probs, k=3, labels=np.arange(k)))
        assert m["top3"] >= m["accuracy"]
    else:
        assert m["top3"] is None  # 100% by construction with 3 classes or fewer
    assert m["n"] == len(pred.labels)


def test_balanced_accuracy_mcc_and_majority_baseline_follow_their_definitions(pred):
    k = pred.num_classes
    m = analysis.overall_metrics(pred.labels, pred.probs)
    cm = confusion_matrix(pred.labels, pred.preds, labels=np.arange(k)).astype(np.float64)
    present = cm.sum(1) > 0
    assert m["balanced_accuracy"] == pytest.approx(np.mean(np.diag(cm)[present] / cm.sum(1)[present]))
    # Gorodkin's multi-class MCC from the confusion matrix (R_K, 2004)
    c, s, t, p = np.trace(cm), cm.sum(), cm.sum(1), cm.sum(0)
    assert m["mcc"] == pytest.approx((c * s - t @ p) / np.sqrt((s ** 2 - p @ p) * (s ** 2 - t @ t)))
    counts = np.bincount(pred.labels, minlength=k)
    assert m["majority_class"] == int(np.argmax(counts)) and m["majority_accuracy"] == pytest.approx(counts.max() / s)


def test_per_class_rows_match_sklearn(pred):
    names = [str(c) for c in range(pred.num_classes)]
    rows = analysis.per_class_metrics(pred.labels, pred.preds, names)
    p, r, f, s = precision_recall_fscore_support(pred.labels, pred.preds, labels=np.arange(len(names)), zero_division=0)
    assert [row["class"] for row in rows] == names
    assert np.allclose([row["precision"] for row in rows], p) and np.allclose([row["recall"] for row in rows], r)
    assert np.allclose([row["f1"] for row in rows], f) and [row["support"] for row in rows] == s.tolist()
    found = [int(np.sum((pred.labels == c) & (pred.preds == c))) for c in range(len(names))]
    assert [row["found"] for row in rows] == found
    assert np.allclose([row["prevalence"] for row in rows], s / len(pred.labels))


def test_roc_auc_matches_sklearn_one_vs_rest(pred):
    curves = analysis.roc_pr_curves(pred.labels, pred.probs)
    for c, curve in enumerate(curves):
        y = pred.labels == c
        assert curve["roc_auc"] == pytest.approx(roc_auc_score(y, pred.probs[:, c]), abs=1e-9)
        assert len(curve["fpr"]) <= 200 and curve["fpr"][0] == 0 and curve["tpr"][-1] == 1


def test_reliability_and_ece(pred):
    cal = analysis.reliability(pred.labels, pred.probs, n_bins=10)
    conf = pred.probs.max(1).astype(np.float64)
    correct = (pred.preds == pred.labels).astype(int)
    acc, mean_conf = calibration_curve(correct, np.clip(conf, 0, 1), n_bins=10)
    assert np.allclose(cal["accuracy"], acc) and np.allclose(cal["confidence"], mean_conf)
    assert sum(cal["count"]) == len(pred.labels)
    # ECE from first principles: bin by confidence, weight |accuracy - confidence| by bin share.
    bins = np.minimum((conf * 10).astype(int), 9)
    ece = sum((bins == b).mean() * abs(correct[bins == b].mean() - conf[bins == b].mean())
              for b in range(10) if (bins == b).any())
    assert cal["ece"] == pytest.approx(ece, abs=2e-3)  # edge placement differs only at exact bin boundaries


def test_most_confused_pairs_sum_both_directions(pred):
    cm = analysis.confusion(pred.labels, pred.preds, pred.num_classes)
    pairs = analysis.most_confused_pairs(cm, top=5)
    totals = [t for _, _, t in pairs]
    assert totals == sorted(totals, reverse=True)
    for a, b, t in pairs:
        assert a < b and t == cm[a, b] + cm[b, a]
    off = cm + cm.T
    np.fill_diagonal(off, 0)
    if pairs:
        assert totals[0] == off.max()


@pytest.mark.parametrize("by", list(analysis.SORT_KEYS))
def test_sorting_is_a_permutation_in_the_promised_order(pred, by):
    idx = np.flatnonzero(pred.labels >= 0)[::3]  # a mixed selection: right and wrong
    out = analysis.sort_indices(idx, pred.labels, pred.probs, by)
    assert np.array_equal(np.sort(out), np.sort(idx))
    p = pred.probs[out]
    if by == "confidence":
        wrong = p.argmax(1) != pred.labels[out]
        assert not np.any(~wrong[:-1] & wrong[1:])  # every mistake before every correct one
        conf = p.max(1)
        assert (np.diff(conf[wrong]) <= 0).all() and (np.diff(conf[~wrong]) <= 0).all()
    elif by == "loss":
        assert (np.diff(-np.log(np.clip(p[np.arange(len(out)), pred.labels[out]], 1e-12, None))) <= 1e-6).all()
    elif by == "margin":
        s = np.sort(p, axis=1)
        assert (np.diff(s[:, -1] - s[:, -2]) >= 0).all()
    elif by == "least":
        conf = p.max(1)
        assert (np.diff(conf) >= 0).all()
        ties = np.diff(conf) == 0
        assert (np.diff(out)[ties] > 0).all()  # equal confidence: ascending test index
    else:
        assert (np.diff(out) > 0).all()


def test_sort_rejects_unknown_key(pred):
    with pytest.raises(ValueError, match="unknown sort key"):
        analysis.sort_indices(np.arange(3), pred.labels, pred.probs, "bogus")


def test_paging():
    idx = np.arange(100)
    shown, page, pages = analysis.page_of(idx, 0)
    assert pages == 3 and page == 0 and np.array_equal(shown, np.arange(48))
    shown, page, _ = analysis.page_of(idx, 99)
    assert page == 2 and np.array_equal(shown, np.arange(96, 100))
    assert analysis.page_of(np.arange(0), 5)[1:] == (0, 1)


def test_top_k():
    row = np.array([0.1, 0.5, 0.05, 0.3, 0.05])
    assert [c for c, _ in analysis.top_k(row, 3)] == [1, 3, 0]


def test_comparison_sets_partition_the_errors(pred):
    rng = np.random.default_rng(0)
    other = pred.preds.copy()
    flip = rng.random(len(other)) < 0.2
    other[flip] = rng.integers(0, pred.num_classes, flip.sum())
    sets = analysis.comparison_sets(pred.labels, pred.preds, other)
    wrong_a, wrong_b = pred.preds != pred.labels, other != pred.labels
    assert np.array_equal(np.sort(np.concatenate([sets["fixed"], sets["both"]])), np.flatnonzero(wrong_a))
    assert np.array_equal(np.sort(np.concatenate([sets["introduced"], sets["both"]])), np.flatnonzero(wrong_b))
    assert not set(sets["fixed"]) & set(sets["introduced"])
    assert (~wrong_b[sets["fixed"]]).all() and (~wrong_a[sets["introduced"]]).all()


def _same(a, b) -> bool:
    return np.array_equal(a.cm, b.cm) and a.pairs == b.pairs and a.overall == pytest.approx(b.overall)


def test_summary_is_stored_beside_the_predictions_and_read_back(pred, tmp_path, monkeypatch):
    import trainer.sources

    monkeypatch.setattr(trainer.sources, "CACHE_DIR", tmp_path / "cache")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    names = tuple(str(c) for c in range(pred.num_classes))
    fresh = summaries.compute_summary(pred, names)
    p2 = analysis.Predictions(pred.key + ":roundtrip", pred.labels, pred.probs)
    first = summaries.summary(p2, names, run_dir)          # computes and writes RUN_DIR/summary.json
    stored = json.loads((run_dir / summaries.SUMMARY_FILE).read_text())
    weights, fingerprint = p2.key.split(":", 1)
    assert stored["artifact"]["file"] == "summary.json" and stored["artifact"]["version"] == summaries.SUMMARY.version
    assert (stored["artifact"]["weights"], stored["artifact"]["test_set"]) == (weights, fingerprint)
    assert not (tmp_path / "cache").exists()
    summaries.summary.cache_clear()
    assert _same(summaries.summary(p2, names, run_dir), fresh) and _same(first, fresh)  # read back
    # other weights (another key): the file is not trusted, and it is replaced
    summaries.summary.cache_clear()
    p3 = analysis.Predictions(pred.key + ":other", pred.labels, np.roll(pred.probs, 1, axis=1))
    assert not _same(summaries.summary(p3, names, run_dir), fresh)
    assert json.loads((run_dir / summaries.SUMMARY_FILE).read_text())["artifact"]["test_set"] == p3.key.split(":", 1)[1]
    # renamed classes: the stored file is refused (bound to the class names) and replaced
    summaries.summary.cache_clear()
    renamed = tuple(f"c{c}" for c in range(pred.num_classes))
    assert [r["class"] for r in summaries.summary(p3, renamed, run_dir).per_class] == list(renamed)


def test_summary_falls_back_to_the_user_cache_when_the_run_is_not_writable(pred, tmp_path, monkeypatch):
    import trainer.sources

    monkeypatch.setattr(trainer.sources, "CACHE_DIR", tmp_path / "cache")
    # A "run directory" that is a file: writing beside it fails even for root, who ignores modes.
    run_dir = tmp_path / "not-a-folder"
    run_dir.write_text("")
    names = tuple(str(c) for c in range(pred.num_classes))
    p2 = analysis.Predictions(pred.key + ":readonly", pred.labels, pred.probs)
    got = summaries.summary(p2, names, run_dir)
    assert len(list((tmp_path / "cache" / "analysis").glob("*/summary.json"))) == 1
    summaries.summary.cache_clear()
    assert _same(summaries.summary(p2, names, run_dir), got)  # read from the user cache


def test_predictions_hash_on_content_key(pred):
    twin = analysis.Predictions(pred.key, pred.labels.copy(), pred.probs.copy())
    assert twin == pred and hash(twin) == hash(pred)
    assert analysis.cell_index_of(twin) is analysis.cell_index_of(pred)


# ---------------------------------------------------------------- view logic (plain functions)

def test_gallery_state_transitions():
    from xai_dashboard.inputs import clicked_cell, pair_cells
    from xai_dashboard.views.errors import next_state

    names = ["cat", "dog", "car"]
    assert clicked_cell({"points": [{"x": "dog", "y": "cat"}]}, names) == (0, 1)
    assert clicked_cell({"points": [{"x": 7, "y": 7, "pointNumber": [2, 1]}]}, names) == (2, 1)
    assert clicked_cell(None, names) is None
    assert pair_cells("0-1,1-0", 3) == ((0, 1), (1, 0))
    sel, page = next_state("confusion-matrix", click_cell=(0, 1), pair_cells=None, run="a", selection=None, page=3)
    assert sel == {"run": "a", "cells": [[0, 1]]} and page == 0
    sel2, page = next_state("gallery-next", click_cell=(0, 1), pair_cells=None, run="a", selection=sel, page=0)
    assert sel2 == sel and page == 1
    sel3, page = next_state("run-select", click_cell=(0, 1), pair_cells=None, run="b", selection=sel, page=4)
    assert sel3 == {"run": "b", "cells": None} and page == 0
    sel4, _ = next_state("pair", click_cell=None, pair_cells=((0, 1), (1, 0)), run="a", selection=sel, page=0)
    assert sel4["cells"] == [[0, 1], [1, 0]]


def test_overview_helpers_read_meta_and_build_figures(pred, tmp_path):
    from xai_dashboard.views.overview import metric_cards, overview_figures, timing_rows

    meta = {"timings": {"inference_images_per_s": 2000.0, "train_seconds": 12.5}, "num_parameters": 1234,
            "provenance": {"device": "cpu"}}
    rows = dict(timing_rows(meta))
    assert rows["Inference throughput"] == "2,000 images/s" and rows["Mean latency per image (batched)"] == "0.500 ms"
    assert rows["Parameters"] == "1,234" and timing_rows({}) == []
    names = tuple(str(c) for c in range(pred.num_classes))
    overall = analysis.overall_metrics(pred.labels, pred.probs)
    labels = [label for label, _, _ in metric_cards(overall, list(names))]
    assert labels[:3] == ["Accuracy", "Balanced accuracy", "MCC"] and ("Top-3 accuracy" in labels) == (len(names) > 3)
    bars, history, roc, pr, rel = overview_figures(pred, names, "[]", tmp_path)
    shown = min(pred.num_classes, figures.MAX_CURVES)
    assert len(bars["data"]) == 3 and len(roc["data"]) == shown + 1 and len(pr["data"]) == shown
    assert "ECE" in rel["layout"]["title"]["text"]


def test_curves_of_many_classes_show_the_worst_and_skip_absent_ones():
    nan = float("nan")
    curves = [{"roc_auc": a} for a in (0.9, 0.5, nan, 0.7, 0.95, 0.6)]
    assert figures.shown_curves(curves, "roc_auc", limit=10) == [0, 1, 3, 4, 5]
    assert figures.shown_curves(curves, "roc_auc", limit=3) == [1, 3, 5]  # the three lowest, in class order
