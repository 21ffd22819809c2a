"""Error analysis as pure functions of (labels, probabilities): no Dash, no plotly.

Shapes used throughout: ``labels`` and ``preds`` int64 ``(N,)``, ``probs``
float32 ``(N, K)`` (rows sum to 1), index arrays int64 ``(M,)`` of test-set
positions. Every metric comes from scikit-learn; only the reliability binning
is shared with :func:`sklearn.calibration.calibration_curve` by hand, because
that function drops empty bins and so cannot give the bin weights ECE needs.

Results for a whole run are memoised per process in ``lru_cache`` keyed by
:class:`Predictions`, whose identity is its *content* key (weights sha256 +
dataset fingerprint): two users asking about the same run share the work, and
nothing user-specific is ever stored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

SORT_KEYS = {
    "confidence": "Most confident mistakes first",
    "least": "Least confident first",
    "loss": "Highest loss first",
    "margin": "Smallest margin (top-1 − top-2) first",
    "index": "Test-set order",
}
PAGE_SIZE = 48


@dataclass(frozen=True, eq=False)
class Predictions:
    """One run's test-set outputs. Equality and hash use ``key`` only, so caches key on content."""

    key: str
    labels: np.ndarray = field(repr=False)  # int64 (N,)
    probs: np.ndarray = field(repr=False)   # float32 (N, K)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Predictions) and other.key == self.key

    @property
    def num_classes(self) -> int:
        return self.probs.shape[1]

    @cached_property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)


def content_key(meta: dict) -> str:
    """What a run's predictions are a function of: its weights and its test set."""
    return f"{meta['weights_sha256']}:{meta['dataset']['fingerprint']}"


def predictions_of(run) -> Predictions:
    """Wrap a :class:`~xai_dashboard.store.LoadedRun` (no copies)."""
    return Predictions(content_key(run.meta), np.asarray(run.labels, dtype=np.int64), run.probs)


# ---------------------------------------------------------------- metrics

def confusion(labels: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """``(K, K)`` int64 counts; rows are true classes, columns predicted classes."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(labels, preds, labels=np.arange(k)).astype(np.int64)


def row_normalise(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its total (a row with no images stays 0)."""
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros(cm.shape, dtype=np.float64), where=totals > 0)


def present_classes(labels: np.ndarray, k: int) -> np.ndarray:
    """The classes (of ``k``) with at least one test image in ``labels`` ``(N,)``, ascending."""
    return np.flatnonzero(np.bincount(labels, minlength=k))


def overall_metrics(labels: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> dict:
    """Accuracy beside the majority-class baseline, balanced accuracy, MCC, macro precision/recall/F1,
    top-3 accuracy (None unless K > 3: with 3 classes or fewer it is 100% by construction), log loss, ECE.

    The macro averages are over the classes with test images (:func:`present_classes`), as balanced
    accuracy's mean recall is: a class absent from the test set has no recall, and counting it as 0
    would cap a perfect model's macro scores at the share of classes present. Among those, a class
    never predicted counts precision 0 (``zero_division=0``).
    """
    from sklearn.metrics import (
        accuracy_score, balanced_accuracy_score, log_loss, matthews_corrcoef, precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    k = probs.shape[1]
    preds = probs.argmax(1)
    p, r, f, _ = precision_recall_fscore_support(labels, preds, labels=present_classes(labels, k), average="macro",
                                                 zero_division=0)
    majority = int(np.argmax(np.bincount(labels, minlength=k)))
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        # what always answering the most frequent class scores: the bar any model must clear
        "majority_class": majority,
        "majority_accuracy": float(accuracy_score(labels, np.full_like(labels, majority))),
        "balanced_accuracy": float(balanced_accuracy_score(labels, preds)),
        "mcc": float(matthews_corrcoef(labels, preds)),
        "precision": float(p), "recall": float(r), "f1": float(f),
        "top3": float(top_k_accuracy_score(labels, probs, k=3, labels=np.arange(k))) if k > 3 else None,
        "log_loss": float(log_loss(labels, np.clip(probs, 1e-7, 1.0), labels=np.arange(k))),
        "ece": reliability(labels, probs, n_bins)["ece"],
        "n": int(len(labels)),
    }


def per_class_metrics(labels: np.ndarray, preds: np.ndarray, class_names: list[str]) -> list[dict]:
    """One row per class: precision, recall (the per-class accuracy), F1, support, ``found``
    (correctly predicted images of the class) and prevalence (its share of the test set).

    Undefined scores are NaN (n/a), not 0: a class with no test images has no recall, and no precision
    or F1 either unless the model predicted it (then both are 0: each such prediction is wrong). A class
    with test images that is never predicted has precision 0, as in :func:`overall_metrics`.
    """
    from sklearn.metrics import precision_recall_fscore_support

    k = len(class_names)
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=np.arange(k), zero_division=0)
    # zero_division=np.nan marks exactly the 0/0 scores; only those of absent classes are taken from it
    p_nan, r_nan, f_nan, _ = precision_recall_fscore_support(labels, preds, labels=np.arange(k), zero_division=np.nan)
    absent = s == 0
    p, r, f = (np.where(absent, undefined, defined) for defined, undefined in ((p, p_nan), (r, r_nan), (f, f_nan)))
    found = np.bincount(labels[labels == preds], minlength=k)
    n = max(len(labels), 1)
    return [
        {"class": name, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i]),
         "found": int(found[i]), "prevalence": float(s[i] / n)}
        for i, name in enumerate(class_names)
    ]


def _thin(*arrays: np.ndarray, max_points: int) -> list[np.ndarray]:
    """Keep at most ``max_points`` evenly spaced points (ends included) so figures stay small."""
    n = len(arrays[0])
    if n <= max_points:
        return list(arrays)
    keep = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
    return [a[keep] for a in arrays]


def roc_pr_curves(labels: np.ndarray, probs: np.ndarray, max_points: int = 200) -> list[dict]:
    """One-vs-rest ROC and precision-recall curve per class.

    Returns K dicts: ``fpr``, ``tpr``, ``roc_auc``, ``precision``, ``recall``,
    ``ap`` (average precision, the PR-curve area). A class absent from the
    test set has NaN areas and empty curves.
    """
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    out = []
    for c in range(probs.shape[1]):
        y = labels == c
        if not y.any() or y.all():
            nan = float("nan")
            out.append({"fpr": [], "tpr": [], "roc_auc": nan, "precision": [], "recall": [], "ap": nan})
            continue
        fpr, tpr, _ = roc_curve(y, probs[:, c])
        roc_auc = float(auc(fpr, tpr))
        prec, rec, _ = precision_recall_curve(y, probs[:, c])
        fpr, tpr = _thin(fpr, tpr, max_points=max_points)
        prec, rec = _thin(prec, rec, max_points=max_points)
        out.append({
            "fpr": fpr.tolist(), "tpr": tpr.tolist(), "roc_auc": roc_auc,
            "precision": prec.tolist(), "recall": rec.tolist(),
            "ap": float(average_precision_score(y, probs[:, c])),
        })
    return out


def reliability(labels: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> dict:
    """Reliability diagram of top-1 confidence and the expected calibration error.

    ``confidence``/``accuracy``/``count`` are per non-empty bin (from
    ``calibration_curve``, uniform bins); ``ece`` = Σ_b (n_b / N) · |acc_b − conf_b|.
    """
    from sklearn.calibration import calibration_curve

    conf = np.clip(probs.max(1).astype(np.float64), 0.0, 1.0)
    correct = (probs.argmax(1) == labels).astype(np.int64)
    acc, mean_conf = calibration_curve(correct, conf, n_bins=n_bins, strategy="uniform", pos_label=1)
    # Same edges and searchsorted rule as calibration_curve, for the bin weights it does not return.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=n_bins)
    nonzero = counts > 0
    ece = float(np.sum(counts[nonzero] / len(conf) * np.abs(acc - mean_conf)))
    return {
        "confidence": mean_conf.tolist(), "accuracy": acc.tolist(), "count": counts[nonzero].tolist(),
        "bin_lo": edges[:-1][nonzero].tolist(), "bin_hi": edges[1:][nonzero].tolist(), "ece": ece,
    }


# ---------------------------------------------------------------- confusion cells

@dataclass(frozen=True)
class CellIndex:
    """Test-set indices grouped by (true, predicted) cell.

    ``order`` ``(N,)`` sorts the test set by cell code ``true * K + pred`` (stable,
    so indices stay ascending inside a cell); ``bounds`` ``(K*K + 1,)`` delimits cells.
    """

    k: int
    order: np.ndarray
    bounds: np.ndarray

    def cell(self, true: int, pred: int) -> np.ndarray:
        c = true * self.k + pred
        return self.order[self.bounds[c]:self.bounds[c + 1]]

    def cells(self, pairs: list[tuple[int, int]]) -> np.ndarray:
        parts = [self.cell(t, p) for t, p in pairs]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def errors(self) -> np.ndarray:
        return self.cells([(t, p) for t in range(self.k) for p in range(self.k) if t != p])


def cell_index(labels: np.ndarray, preds: np.ndarray, k: int) -> CellIndex:
    code = labels.astype(np.int64) * k + preds.astype(np.int64)
    order = np.argsort(code, kind="stable")
    bounds = np.searchsorted(code[order], np.arange(k * k + 1))
    return CellIndex(k, order, bounds)


def most_confused_pairs(cm: np.ndarray, top: int = 5) -> list[tuple[int, int, int]]:
    """Unordered class pairs ``(a, b, cm[a,b] + cm[b,a])`` with a < b, most confused first."""
    sym = cm + cm.T
    a, b = np.triu_indices(len(cm), k=1)
    totals = sym[a, b]
    order = np.lexsort((b, a, -totals))  # ties broken by class order, so the list is stable
    return [(int(a[i]), int(b[i]), int(totals[i])) for i in order[:top] if totals[i] > 0]


# ---------------------------------------------------------------- sorting and paging

def loss(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy −log p(true class) of each row of ``probs`` ``(M, K)`` (``labels`` ``(M,)``)."""
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))


def margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row of ``probs`` ``(M, K)``: small = ambiguous."""
    top2 = np.partition(probs, -2, axis=1)[:, -2:] if probs.shape[1] > 1 else np.hstack([np.zeros_like(probs), probs])
    return top2[:, 1] - top2[:, 0]


def sort_indices(idx: np.ndarray, labels: np.ndarray, probs: np.ndarray, by: str) -> np.ndarray:
    """Order test-set indices ``idx`` ``(M,)`` for the gallery; ties keep ascending index.

    * ``confidence``: mistakes before correct predictions, each by the
      probability of the predicted class, highest first.
    * ``loss``: cross-entropy −log p(true class), highest first.
    * ``least``: the probability of the predicted class, lowest first (for correct predictions:
      the ones the model nearly got wrong).
    * ``margin``: top-1 minus top-2 probability, smallest (most ambiguous) first.
    * ``index``: ascending test-set index.
    """
    idx = np.asarray(idx, dtype=np.int64)
    if by == "index" or len(idx) == 0:
        return np.sort(idx)
    p = probs[idx]
    if by == "confidence":
        pred = p.argmax(1)
        correct = pred == labels[idx]
        key = (idx, -p[np.arange(len(idx)), pred], correct)
    elif by == "least":
        key = (idx, p.max(1))
    elif by == "loss":
        key = (idx, -loss(p, labels[idx]))
    elif by == "margin":
        key = (idx, margin(p))
    else:
        raise ValueError(f"unknown sort key {by!r}; use one of {', '.join(SORT_KEYS)}")
    return idx[np.lexsort(key)]


def default_sort(cells) -> str:
    """The order a selection opens in: correct predictions (diagonal cells only) least confident first,
    where the model nearly failed; anything with mistakes most confident mistakes first."""
    return "least" if cells is not None and all(t == p for t, p in cells) else "confidence"


def within_confidence(idx: np.ndarray, probs: np.ndarray, low: float, high: float) -> np.ndarray:
    """The indices of ``idx`` ``(M,)``, in their order, whose top-1 probability (``probs`` ``(N, K)``)
    lies in ``[low, high]``."""
    conf = probs[idx].max(1) if len(idx) else np.empty(0)
    return idx[(conf >= low) & (conf <= high)]


def page_of(idx: np.ndarray, page: int, per_page: int = PAGE_SIZE) -> tuple[np.ndarray, int, int]:
    """``(indices on the page, page clamped into range, number of pages)``."""
    pages = max(1, -(-len(idx) // per_page))
    page = min(max(int(page), 0), pages - 1)
    return idx[page * per_page:(page + 1) * per_page], page, pages


def top_k(prob_row: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """The ``k`` most probable classes of one ``(K,)`` row, best first."""
    order = np.argsort(-prob_row, kind="stable")[:k]
    return [(int(c), float(prob_row[c])) for c in order]


# ---------------------------------------------------------------- run comparison

def comparison_sets(labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray) -> dict[str, np.ndarray]:
    """Indices where B fixes A's error, introduces a new one, or both are wrong."""
    wrong_a, wrong_b = preds_a != labels, preds_b != labels
    return {
        "fixed": np.flatnonzero(wrong_a & ~wrong_b),
        "introduced": np.flatnonzero(~wrong_a & wrong_b),
        "both": np.flatnonzero(wrong_a & wrong_b),
    }


# ---------------------------------------------------------------- cached per run

@lru_cache(maxsize=16)
def cell_index_of(p: Predictions) -> CellIndex:
    """Built on first use of a run's confusion cells (a stable argsort, ~1 ms for 10k images)."""
    return cell_index(p.labels, p.preds, p.num_classes)


@lru_cache(maxsize=64)
def sorted_selection(p: Predictions, cells: tuple[tuple[int, int], ...] | None, by: str) -> np.ndarray:
    """The gallery's full ordered index list for a selection (``None`` = every mistake)."""
    ci = cell_index_of(p)
    idx = ci.errors() if cells is None else ci.cells(list(cells))
    return sort_indices(idx, p.labels, p.probs, by)


@lru_cache(maxsize=16)
def compare(a: Predictions, b: Predictions) -> dict[str, np.ndarray]:
    if not np.array_equal(a.labels, b.labels):
        raise ValueError("runs were evaluated on different test labels")
    return comparison_sets(a.labels, a.preds, b.preds)
