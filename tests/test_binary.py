"""Two-class runs: metrics at a decision threshold, choosing the threshold, and what the views say.

The metrics are checked against their textbook definitions computed here from the
four confusion counts, not against the scikit-learn calls the module makes; the
threshold choices against hand-made cases and a brute-force search.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from xai_dashboard import analysis, thresholds
from xai_dashboard.views.compare import found_changes, headline
from xai_dashboard.views.overview import metric_cards, model_warnings

# Hand-made: 5 positives scored 0.9 0.8 0.6 0.35 0.2 and 5 negatives scored 0.7 0.5 0.4 0.3 0.1.
Y = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0], dtype=bool)
S = np.array([0.9, 0.7, 0.8, 0.5, 0.6, 0.4, 0.35, 0.3, 0.2, 0.1])


def textbook(y: np.ndarray, scores: np.ndarray, t: float) -> dict:
    """Precision, recall, F1, balanced accuracy and MCC from their definitions (Powers 2011; Matthews 1975)."""
    pred = scores >= t
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = int(np.sum(~pred & y)), int(np.sum(~pred & ~y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {"cm": [[tn, fp], [fn, tp]], "precision": precision, "recall": recall, "f1": f1,
            "balanced_accuracy": (recall + tn / (tn + fp)) / 2, "mcc": (tp * tn - fp * fn) / denom if denom else 0.0,
            "prevalence": float(np.mean(y))}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("t", [0.0, 0.05, 0.3, 0.5, 0.77, 1.0, 1.5])
def test_metrics_at_a_threshold_follow_their_definitions(seed, t):
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.1  # ~10% positives, as in cat/dog 500/55
    scores = np.clip(rng.normal(0.2 + 0.4 * y, 0.2), 0, 1)
    got, want = thresholds.metrics_at(y, scores, t), textbook(y, scores, t)
    assert got["cm"] == want["cm"]
    for key in ("precision", "recall", "f1", "balanced_accuracy", "mcc", "prevalence"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_threshold_for_a_target_recall_on_a_hand_made_case():
    # positives sorted by score: 0.9 0.8 0.6 0.35 0.2 -> recall 1/5 .. 5/5 at those thresholds
    expected = {0.2: 0.9, 0.4: 0.8, 0.5: 0.6, 0.6: 0.6, 0.61: 0.35, 0.8: 0.35, 0.81: 0.2, 1.0: 0.2}
    for target, t in expected.items():
        got = thresholds.threshold_for_recall(Y, S, target)
        assert got == t, target
        assert np.mean(S[Y] >= got) >= target                                  # reaches the target...
        assert np.mean(S[Y] >= np.nextafter(got, 2)) < target                  # ...and nothing higher does
    for bad in (0, -0.1, 1.01):
        with pytest.raises(ValueError, match="target recall"):
            thresholds.threshold_for_recall(Y, S, bad)


def test_threshold_for_a_cost_ratio_is_the_cheapest():
    # A miss 100x worse than a false alarm: find every positive with the fewest false alarms.
    assert thresholds.threshold_for_cost(Y, S, 100) == 0.2
    # A miss nearly free: no false alarm at all (every negative scores below 0.8), then the fewest misses.
    assert thresholds.threshold_for_cost(Y, S, 0.01) == 0.8
    rng = np.random.default_rng(5)
    y = rng.random(200) < 0.15
    s = np.round(rng.random(200) * 0.5 + 0.4 * y, 2)  # rounding makes ties
    for ratio in (0.3, 1, 3, 9):
        candidates = np.append(np.unique(s), np.inf)  # brute force over every distinct decision
        cost = [ratio * np.sum(y & (s < t)) + np.sum(~y & (s >= t)) for t in candidates]
        best = candidates[np.flatnonzero(np.isclose(cost, min(cost)))].max()  # ties: the largest threshold
        got = thresholds.threshold_for_cost(y, s, ratio)
        if np.isinf(best):  # "flag nothing" is returned as a finite threshold above every score
            assert got > s.max() and not np.any(s >= got)
        else:
            assert got == best, ratio


def test_snapped_threshold_predicts_exactly_as_the_exact_one():
    assert thresholds.snap_down(0.6, S, 0.01) == 0.6
    assert thresholds.snap_down(0.3512345, S, 0.001) == 0.351   # no score in [0.351, 0.3512345)
    assert thresholds.snap_down(0.3500001, S, 0.001) == 0.3500001  # 0.35 itself lies in between


def test_prevalence_and_minority_class():
    assert thresholds.prevalence(Y) == 0.5
    assert thresholds.minority_class(np.array([0] * 500 + [1] * 55), 2) == 1


def cat_dog(dog_found: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """500 cats and 55 dogs; the model calls ``dog_found`` dogs (and no cat) a dog: probs ``(555, 2)``."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * 500 + [1] * 55)
    p_dog = np.where(labels == 1, rng.uniform(0.2, 0.45, 555), rng.uniform(0.0, 0.3, 555))
    p_dog[500:500 + dog_found] = 0.8
    return labels, np.column_stack([1 - p_dog, p_dog]).astype(np.float32)


def test_two_class_overview_warns_about_the_majority_baseline_and_a_class_never_found():
    names = ["cat", "dog"]
    labels, probs = cat_dog(dog_found=0)
    overall = analysis.overall_metrics(labels, probs)
    rows = analysis.per_class_metrics(labels, probs.argmax(1), names)
    assert overall["majority_accuracy"] == pytest.approx(500 / 555) and overall["top3"] is None
    cards = dict((label, value) for label, value, _ in metric_cards(overall, names))
    assert "Top-3 accuracy" not in cards and cards["Balanced accuracy"] == "50.00%" and cards["MCC"] == "0.000"
    text = " ".join(model_warnings(overall, rows, names))
    assert "Not better than always answering 'cat'" in text and "90.09%" in text
    assert "'dog' (0 of 55)" in text
    # a model that finds dogs clears the baseline: no warning
    labels, probs = cat_dog(dog_found=32)
    overall = analysis.overall_metrics(labels, probs)
    assert model_warnings(overall, analysis.per_class_metrics(labels, probs.argmax(1), names), names) == []


def test_compare_does_not_call_the_dog_finder_worse_on_accuracy_alone():
    names = ["cat", "dog"]
    labels, unweighted = cat_dog(dog_found=0)
    _, weighted = cat_dog(dog_found=32, seed=1)
    weighted[:40] = [0.3, 0.7]  # ...at the price of 40 cats called dogs: lower accuracy than always 'cat'
    oa, ob = (analysis.overall_metrics(labels, p) for p in (unweighted, weighted))
    assert ob["accuracy"] < oa["accuracy"] and ob["balanced_accuracy"] > oa["balanced_accuracy"]
    text = headline("unweighted", "weighted", oa, ob)
    assert "worse" not in text and "disagree" in text and "balanced accuracy 50.00%" in text
    rows_a = analysis.per_class_metrics(labels, unweighted.argmax(1), names)
    rows_b = analysis.per_class_metrics(labels, weighted.argmax(1), names)
    assert found_changes(rows_a, rows_b)[0] == "B finds 460 of 500 'cat' vs 500 for A"
    assert "B finds 32 of 55 'dog' vs 0 for A" in found_changes(rows_a, rows_b)


def test_two_class_run_through_the_callbacks(tmp_path):
    """The overview of a real two-class run directory warns; the threshold view changes its matrix."""
    from tests.test_class_counts import array, call, make_image_folder, make_run
    from xai_dashboard.app import create_app
    from xai_dashboard.store import RunStore

    spec = make_image_folder(tmp_path / "data", ["cat", "dog"], [2, 2], [500, 55])
    run_dir = make_run(tmp_path / "unweighted", spec, lambda y, k: np.log(cat_dog(0)[1]))
    app = create_app(store=RunStore.from_dirs([run_dir]))
    resp = call(app, "overview-cards.children", {"run-select.value": "unweighted"})
    assert "Not better than always answering 'cat'" in json.dumps(resp["overview-warnings"]["children"])
    base = {"threshold-class.value": 1, "run-select.value": "unweighted", "view-tabs.value": "threshold",
            "chosen-thresholds.data": {}}
    at_half = call(app, "threshold-cards.children", {**base, "threshold-slider.value": 0.5})
    at_low = call(app, "threshold-cards.children", {**base, "threshold-slider.value": 0.25})
    run = app.server.config["XAI_STORE"].get("unweighted")
    for resp, t in ((at_half, 0.5), (at_low, 0.25)):
        cm = textbook(run.labels == 1, run.probs[:, 1], t)["cm"]
        shown = array(resp["threshold-cm"]["figure"]["data"][0]["customdata"])
        assert shown[:, :, 0].tolist() == cm


def test_compare_table_puts_each_run_at_its_own_chosen_threshold():
    from types import SimpleNamespace

    from xai_dashboard.views.compare import threshold_rows

    labels, unweighted = cat_dog(dog_found=0)
    _, weighted = cat_dog(dog_found=32, seed=1)
    a = SimpleNamespace(name="unweighted", labels=labels, probs=unweighted)
    b = SimpleNamespace(name="weighted", labels=labels, probs=weighted)
    chosen = {"unweighted": {"positive": 1, "threshold": 0.3}, "weighted": {"positive": 0, "threshold": 0.9}}
    rows = threshold_rows([a, b], 1, chosen)
    want_a, want_b = textbook(labels == 1, unweighted[:, 1], 0.3), textbook(labels == 1, weighted[:, 1], 0.5)
    assert rows[0]["threshold"] == "0.3" and rows[0]["recall"] == pytest.approx(want_a["recall"])
    assert rows[0]["found"] == f"{want_a['cm'][1][1]} of 55" and rows[0]["prevalence"] == pytest.approx(55 / 555)
    # B's choice was for the other class: B is shown at the default 0.5, and says so
    assert rows[1]["threshold"] == "0.5 (default)" and rows[1]["found"] == "32 of 55"
    assert rows[1]["balanced_accuracy"] == pytest.approx(want_b["balanced_accuracy"])
