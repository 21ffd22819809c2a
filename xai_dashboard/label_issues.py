"""Test images whose given label is probably wrong, ranked by cleanlab (confident learning).

The inputs are the run's stored test-set probabilities: the model never trained on
the test images, so they are the out-of-sample ``pred_probs`` cleanlab asks for.
Nothing here re-implements confident learning; cleanlab decides which images are
flagged (:func:`cleanlab.filter.find_label_issues`) and scores every image
(:func:`cleanlab.rank.get_label_quality_scores`).

Shapes: ``labels`` int64 ``(N,)``, ``probs`` float ``(N, K)`` (rows sum to 1).
Results for a run are memoised per process, keyed by the run's content
(:class:`.analysis.Predictions`), and computed on first use, never at start-up:
cleanlab imports scikit-learn and pandas (seconds), the ranking itself takes
~0.1 s for 10,000 images (``bench/label_issues_speed.py``).
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from .analysis import Predictions, predictions_of

# cleanlab's default score: the model's probability of the given label. Low = suspicious.
SCORE_METHOD = "self_confidence"
# Which images cleanlab flags: prune_by_noise_rate (its default) removes, per pair of classes,
# as many images as the confident joint estimates were mislabelled that way.
FILTER_BY = "prune_by_noise_rate"
COLUMNS = ["index", "given", "suggested", "score"]
API_DEFAULT_LIMIT, API_MAX_LIMIT = 100, 10_000  # GET /api/label-issues?limit=K

if TYPE_CHECKING:
    import pandas as pd


class LabelIssuesError(ValueError):
    """cleanlab refused the run's labels or probabilities; the message says why."""


def quality_scores(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """cleanlab's label-quality score of every image, float64 ``(N,)`` in [0, 1]; low = suspicious."""
    from cleanlab.rank import get_label_quality_scores

    return np.asarray(get_label_quality_scores(labels, probs, method=SCORE_METHOD), dtype=np.float64)


def flagged(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Indices int64 ``(M,)`` of the images cleanlab flags as label issues, most suspicious first."""
    from cleanlab.filter import find_label_issues

    # n_jobs=1: no process pool inside a web worker; one process is fast enough for 10k images.
    found = find_label_issues(labels, probs, filter_by=FILTER_BY, return_indices_ranked_by=SCORE_METHOD,
                              n_jobs=1, verbose=False)
    return np.asarray(found, dtype=np.int64)


def suggested_labels(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The most probable class other than the given one, int64 ``(N,)``: the likeliest correction."""
    others = np.array(probs, dtype=np.float64, copy=True)
    others[np.arange(len(labels)), labels] = -np.inf
    return others.argmax(1)


def issues_frame(labels: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """The flagged images in rank order: columns ``index``, ``given``, ``suggested`` (class indices)
    and ``score`` (label quality)."""
    import pandas as pd

    labels = np.asarray(labels, dtype=np.int64)
    try:
        order = flagged(labels, probs)
        scores = quality_scores(labels, probs)
    except (ValueError, AssertionError) as e:  # cleanlab's own checks of its inputs
        raise LabelIssuesError(f"cleanlab could not rank these labels: {e}") from None
    return pd.DataFrame({"index": order, "given": labels[order],
                         "suggested": suggested_labels(labels[order], probs[order]), "score": scores[order]},
                        columns=COLUMNS)


@lru_cache(maxsize=16)
def _quality(p: Predictions) -> np.ndarray:
    try:
        scores = quality_scores(p.labels, p.probs)
    except (ValueError, AssertionError) as e:
        raise LabelIssuesError(f"cleanlab could not score these labels: {e}") from None
    scores.setflags(write=False)  # shared by every caller of the cache
    return scores


@lru_cache(maxsize=16)
def _ranked(p: Predictions) -> pd.DataFrame:
    return issues_frame(p.labels, p.probs)


def label_quality(run) -> np.ndarray:
    """cleanlab's label-quality score of each test image of ``run``, float64 ``(N,)`` in [0, 1]
    (read-only; low = the given label is suspicious)."""
    return _quality(predictions_of(run))


def rank_label_issues(run) -> pd.DataFrame:
    """The test images of ``run`` cleanlab flags, most suspicious first (a copy: callers may edit it).

    Columns: ``index`` (test-set position), ``given`` and ``suggested`` (class indices), ``score``.
    """
    return _ranked(predictions_of(run)).copy()


def issues_table(run, reviews: dict, hide_reviewed: bool = False) -> pd.DataFrame:
    """The label-issues gallery as a CSV table: the flagged images in rank order (without the reviewed
    ones when ``hide_reviewed``), each with the export's leading columns (:func:`.export.image_frame`:
    ``label`` is the given label), then ``rank`` (1 = most suspicious, among every flagged image),
    ``suggested`` (class name), ``score`` (label quality), ``review`` (``wrong``/``fine``/``unsure``,
    empty when not reviewed) and ``reviewed label`` (the class a "wrong" review gives, else empty).
    ``reviews``: test index -> :class:`.reviews.Review`."""
    from .export import image_frame

    ranked = _ranked(predictions_of(run))
    keep = ~ranked["index"].isin(list(reviews)).to_numpy() if hide_reviewed else np.ones(len(ranked), bool)
    rows = ranked[keep]
    names = np.asarray(run.class_names, dtype=object)
    frame = image_frame(run, rows["index"].to_numpy())
    frame["rank"] = np.flatnonzero(keep) + 1
    frame["suggested"] = names[rows["suggested"].to_numpy()]
    frame["score"] = rows["score"].to_numpy()
    given = [reviews.get(int(i)) for i in rows["index"]]
    frame["review"] = [r.verdict if r is not None else "" for r in given]
    frame["reviewed label"] = [names[r.label] if r is not None and r.label is not None else "" for r in given]
    return frame


def issue_records(run, limit: int) -> list[dict]:
    """The first ``limit`` issues as JSON-able ``{index, given, suggested, score}``, labels by class name."""
    names = run.class_names
    return [{"index": int(r.index), "given": names[int(r.given)], "suggested": names[int(r.suggested)],
             "score": float(r.score)} for r in _ranked(predictions_of(run)).head(limit).itertuples()]
