"""A class with no test images (run ``gap`` of the probe: 3 classes, ``c`` never in the test set): n/a in
the per-class table, left out of the macro averages, never the Threshold tab's default positive class.

Data: the digits demo's stored test predictions with every image of classes 0 and 1 dropped, so that
0 is absent and never predicted, and 1 absent but predicted (twice, wrongly). Macro scores are checked
against their definitions from the confusion matrix (mean over the classes present in y_true, as
balanced accuracy is) and against scikit-learn.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from tests.conftest import CHECKPOINTS
from trainer.rundir import load_run
from xai_dashboard import analysis, thresholds
from xai_dashboard.store import softmax

NEVER_PREDICTED, PREDICTED = 0, 1


@pytest.fixture(scope="module")
def gapped() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(labels (M,), probs (M, 10), class names)`` without the test images of classes 0 and 1."""
    run = load_run(CHECKPOINTS / "digits-demo")
    labels, probs = run.predictions["label"].astype(np.int64), softmax(run.predictions["logits"])
    keep = ~np.isin(labels, [NEVER_PREDICTED, PREDICTED])
    labels, probs = labels[keep], probs[keep]
    preds = probs.argmax(1)
    assert not (preds == NEVER_PREDICTED).any() and (preds == PREDICTED).sum() > 0  # the two cases hold
    return labels, probs, list(run.class_names)


def test_per_class_rows_say_n_a_for_classes_without_test_images(gapped):
    labels, probs, names = gapped
    preds = probs.argmax(1)
    rows = analysis.per_class_metrics(labels, preds, names)
    never, predicted = rows[NEVER_PREDICTED], rows[PREDICTED]
    assert never["support"] == 0 and all(np.isnan(never[m]) for m in ("precision", "recall", "f1"))
    # predicted yet absent: every such prediction is wrong (precision 0, F1 0); recall has no images to count
    assert predicted["support"] == 0 and np.isnan(predicted["recall"])
    assert predicted["precision"] == 0 and predicted["f1"] == 0
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=np.arange(10), zero_division=0)
    for c in range(2, 10):  # classes with images: scikit-learn's values, nothing changed
        assert [rows[c][m] for m in ("precision", "recall", "f1", "support")] == pytest.approx([p[c], r[c], f[c], s[c]])


def test_macro_averages_are_over_the_classes_with_test_images(gapped):
    labels, probs, _ = gapped
    preds = probs.argmax(1)
    m = analysis.overall_metrics(labels, probs)
    cm = confusion_matrix(labels, preds, labels=np.arange(10))
    tp, fp, fn = np.diag(cm), cm.sum(0) - np.diag(cm), cm.sum(1) - np.diag(cm)
    present = np.flatnonzero(cm.sum(1))
    assert list(present) == list(range(2, 10))
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)[present].mean()
    assert m["precision"] == pytest.approx(precision)
    assert m["recall"] == pytest.approx((tp[present] / (tp + fn)[present]).mean())
    assert m["recall"] == pytest.approx(balanced_accuracy_score(labels, preds))
    assert m["f1"] == pytest.approx((2 * tp[present] / (2 * tp + fp + fn)[present]).mean())
    assert m["f1"] == pytest.approx(f1_score(labels, preds, labels=present, average="macro"))


def test_a_perfect_model_scores_1_whatever_classes_the_test_set_lacks(gapped):
    """The probe's symptom: accuracy 100 % beside macro precision/recall/F1 0.667."""
    labels, _, names = gapped
    probs = np.full((len(labels), 10), 0.01, np.float32)
    probs[np.arange(len(labels)), labels] = 0.91
    m = analysis.overall_metrics(labels, probs)
    assert m["accuracy"] == m["balanced_accuracy"] == 1.0
    assert (m["precision"], m["recall"], m["f1"]) == (1.0, 1.0, 1.0)
    rows = analysis.per_class_metrics(labels, probs.argmax(1), names)
    assert all(np.isnan(rows[c]["recall"]) for c in (NEVER_PREDICTED, PREDICTED))


def test_threshold_default_class_is_the_rarest_with_test_images(gapped):
    labels, _, _ = gapped
    rare = np.flatnonzero(labels == 5)[:3]
    labels = np.concatenate([labels[labels != 5], labels[rare]])  # class 5 now has 3 test images
    assert thresholds.minority_class(labels, 10) == 5
    assert thresholds.minority_class(np.array([0] * 20 + [1] * 20), 3) == 0  # the probe's gap: not 'c'
    assert thresholds.minority_class(np.array([2, 2, 1]), 4) == 1
