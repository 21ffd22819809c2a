"""The corrected scoreboard: metrics on the original labels or on the reviewed ones.

A switch in the page header (:func:`label_switch`, ``id=SWITCH``) chooses the label set
for every view that shows metrics (overview cards, per-class table, curves, confusion
matrix, its gallery, the threshold view, "Compare runs"; each says which labels it uses with
:func:`labels_in_use`). "Reviewed labels" are the given labels with each "label is wrong ->
class X" review of :mod:`.reviews` applied (:func:`effective_labels`); "label is fine" and
"not sure" keep the label. ``STAMP`` (a ``dcc.Store``) changes whenever this page saves a
review, so views showing reviewed metrics redraw.

The reviewed labels are wrapped in a :class:`.analysis.Predictions` whose key adds a digest
of the labels, so the per-run caches of :mod:`.analysis` serve them like any run; their
summary is computed in memory and never stored (reviews change, the run directory must not).
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from dash import dcc, html

from . import summaries
from .analysis import Predictions, predictions_of

SWITCH = "label-set"
STAMP = "reviews-stamp"
NOTE = "label-set-note"
LABEL_SETS = {"original": "original labels", "reviewed": "reviewed labels"}
_REVIEWED = ":reviewed:"  # in a Predictions key: labels changed by reviews


def label_switch() -> html.Div:
    """The header's label-set switch, the stamp views listen to, and a note on what is in use."""
    return html.Div(className="label-switch", children=[
        html.Span("Labels"),
        dcc.RadioItems(id=SWITCH, value="original", inline=True, className="radio",
                       options=[{"label": v, "value": k} for k, v in LABEL_SETS.items()]),
        dcc.Store(id=STAMP, data=0),
        html.Span(id=NOTE, className="hint"),
    ])


def effective_labels(run, reviews: dict) -> np.ndarray:
    """``run.labels`` with every "wrong -> class X" review applied: a new int64 ``(N,)`` array.

    ``reviews``: test-set index -> :class:`.reviews.Review` (checked against the run's test set
    by :meth:`.reviews.ReviewStore.load`)."""
    labels = np.array(run.labels, dtype=np.int64, copy=True)
    for index, review in reviews.items():
        if review.verdict == "wrong":
            labels[index] = review.label
    return labels


def predictions_for(run, label_set: str) -> tuple[Predictions, str | None]:
    """``(predictions scored against the chosen labels, a note for the page or None)``.

    An unusable reviews file gives the original labels and the reason as the note.
    """
    from .reviews import ReviewsError, ReviewStore

    base = predictions_of(run)
    if label_set != "reviewed":
        return base, None
    try:
        reviews = ReviewStore.for_run(run).load()
    except ReviewsError as e:
        return base, f"Reviewed labels unavailable, showing the original labels: {e}"
    labels = effective_labels(run, reviews)
    changed = int(np.count_nonzero(labels != base.labels))
    if not changed:
        return base, None
    digest = hashlib.sha256(labels.tobytes()).hexdigest()[:16]
    return Predictions(f"{base.key}{_REVIEWED}{digest}", labels, base.probs), None


def reviewed_label(run, index: int, label_set: str) -> tuple[int, int, str | None]:
    """``(label on the chosen label set, given label, note)`` of test image ``index``: they differ when the
    reviewed labels are chosen and a review says "wrong -> class X"; the note as :func:`predictions_for`'s."""
    p, note = predictions_for(run, label_set)
    return int(p.labels[index]), int(run.labels[index]), note


@lru_cache(maxsize=16)
def _reviewed_summary(p: Predictions, class_names: tuple[str, ...]) -> summaries.RunSummary:
    return summaries.compute_summary(p, class_names)


def summary_for(p: Predictions, class_names: tuple[str, ...], run_dir: Path | None) -> summaries.RunSummary:
    """The stored summary for the original labels; reviewed labels' computed in memory (~0.1 s, memoised)."""
    if _REVIEWED in p.key:
        return _reviewed_summary(p, class_names)
    return summaries.summary(p, class_names, run_dir)


def scored(run, label_set: str) -> tuple[Predictions, summaries.RunSummary, str | None]:
    """``(predictions, summary, note)`` of ``run`` on the chosen label set (see :func:`predictions_for`)."""
    p, note = predictions_for(run, label_set)
    return p, summary_for(p, tuple(run.class_names), Path(run.run.path)), note


def labels_in_use(run, p: Predictions, label_set: str, problem: str | None) -> html.P:
    """The line a card shows about the labels its figures were scored on: "original labels", "reviewed
    labels: N changed", or (a warning) why the reviewed ones are not used (``problem`` from
    :func:`predictions_for`; ``p`` its predictions, whose labels are compared with ``run.labels``)."""
    if problem:
        return html.P(problem, className="warning", role="alert")
    if label_set != "reviewed":
        return html.P("Scored on the original labels.", className="hint")
    changed = int(np.count_nonzero(p.labels != run.labels))
    return html.P(f"Scored on the reviewed labels: {changed:,} changed.", className="hint")
