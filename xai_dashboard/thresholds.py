"""Decision-threshold analysis of one positive class: pure functions, no Dash, no plotly.

Inputs throughout: ``y`` bool ``(N,)`` (True = the positive class; for a
multi-class run, one class against the rest) and ``scores`` float ``(N,)``
(that class's probability). An image is predicted positive when
``score >= threshold``, the rule of scikit-learn's ``roc_curve`` and
``precision_recall_curve``, so their thresholds are operating points here.
Every metric comes from scikit-learn.
"""
from __future__ import annotations

import math

import numpy as np

DEFAULT_THRESHOLD = 0.5  # p(positive) >= 0.5 is the arg-max decision of a two-class model


def prevalence(y: np.ndarray) -> float:
    """Share of positives in ``y`` ``(N,)``: the precision of a classifier that guesses at random."""
    return float(np.mean(y)) if len(y) else float("nan")


def minority_class(labels: np.ndarray, k: int) -> int:
    """The class with the fewest test images among those that have any (``labels`` int ``(N,)``): a class
    without test images has nothing to threshold. Ties go to the lower index; 0 when ``labels`` is empty."""
    counts = np.bincount(labels, minlength=k)
    present = np.flatnonzero(counts)
    return int(present[np.argmin(counts[present])]) if len(present) else 0


def metrics_at(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Confusion counts and metrics of ``score >= threshold``, each from scikit-learn.

    ``cm`` is ``[[tn, fp], [fn, tp]]`` (rows true negative/positive, columns predicted).
    Precision of no positive prediction counts as 0 (``zero_division=0``).
    """
    from sklearn.metrics import (
        balanced_accuracy_score, confusion_matrix, matthews_corrcoef, precision_recall_fscore_support,
    )

    y = np.asarray(y, dtype=bool)
    pred = np.asarray(scores) >= threshold
    cm = confusion_matrix(y, pred, labels=[False, True])
    p, r, f, _ = precision_recall_fscore_support(y, pred, labels=[True], average=None, zero_division=0)
    (tn, fp), (fn, tp) = cm.tolist()
    return {
        "threshold": float(threshold), "cm": cm.tolist(), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": float(p[0]), "recall": float(r[0]), "f1": float(f[0]),
        # both classes must be present for these; with one, scikit-learn warns and returns a partial answer
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if 0 < y.sum() < len(y) else float("nan"),
        "mcc": float(matthews_corrcoef(y, pred)),
        "prevalence": prevalence(y), "positives": int(y.sum()), "n": int(len(y)),
    }


def _operating_points(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct threshold, highest first, with its false- and true-positive counts.

    ``roc_curve`` without dropping intermediate points lists each distinct score; its first
    threshold (+inf, nothing positive) becomes the next float above the highest score, so a
    threshold is always a finite number a slider can hold.
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("the positive class must have both positive and negative test images")
    fpr, tpr, thr = roc_curve(y, scores, drop_intermediate=False)
    thr = thr.astype(np.float64)
    thr[0] = np.nextafter(float(np.max(scores)), np.inf)
    return thr, fpr * (~y).sum(), tpr * y.sum()


def threshold_for_recall(y: np.ndarray, scores: np.ndarray, target: float) -> float:
    """The largest threshold whose recall is at least ``target`` (0 < target <= 1).

    Recall only falls as the threshold rises, so this is the most selective (highest
    precision) threshold that still finds the share ``target`` of the positives.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target recall must be in (0, 1], got {target}")
    thr, _, tp = _operating_points(y, scores)
    positives = int(np.sum(y))
    # tp / positives >= target, compared in counts so 0.9 * 10 positives needs exactly 9
    needed = math.ceil(round(target * positives, 9))
    return float(thr[np.argmax(tp >= needed)])  # thr descends, tp ascends: the first hit is the largest


def threshold_for_cost(y: np.ndarray, scores: np.ndarray, fn_per_fp: float) -> float:
    """The threshold of smallest total cost ``fn_per_fp * FN + FP``; ties go to the largest threshold.

    ``fn_per_fp`` is what a missed positive costs in units of a false alarm (e.g. 10 when
    missing a dog is ten times worse than calling a cat a dog).
    """
    if not fn_per_fp > 0:
        raise ValueError(f"the cost ratio FN:FP must be positive, got {fn_per_fp}")
    thr, fp, tp = _operating_points(y, scores)
    cost = fn_per_fp * (int(np.sum(y)) - tp) + fp
    return float(thr[np.argmin(cost)])  # argmin takes the first minimum: the largest threshold


def snap_down(threshold: float, scores: np.ndarray, step: float) -> float:
    """A round threshold (a multiple of ``step``) that predicts exactly as ``threshold`` does.

    Moving the threshold down to the next multiple of ``step`` changes nothing while no score
    lies in between; a slider can then show it. When one does, ``threshold`` is kept as is.
    """
    grid = round(math.floor(threshold / step + 1e-9) * step, 10)
    scores = np.asarray(scores)
    return grid if not np.any((scores >= grid) & (scores < threshold)) else float(threshold)
