"""CSV exports of what the views show: a gallery selection, a comparison set, a threshold's
misses and false alarms, the per-class and threshold tables. Pure pandas: a run and a selection in, a
``DataFrame`` out; :func:`download` hands it to ``dcc.Download``.

Every image row has the same leading columns, ``index`` (test-set position), ``file`` (the
image's path inside its folder when the run was trained on an image folder, else empty),
``label``, ``prediction``, ``confidence`` (p of the prediction) and ``p(true)``, followed by
the view's own scores. Rows come in the order the view shows them.
"""
from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
from dash import dcc

from trainer.rundir import RunDirError, load_test_files

from . import analysis

log = logging.getLogger(__name__)
COLUMNS = ["index", "file", "label", "prediction", "confidence", "p(true)"]
GALLERY_COLUMNS = COLUMNS + ["loss", "margin"]
THRESHOLD_KINDS = {"fn": "false negatives", "fp": "false positives"}


def file_paths(run) -> list[str] | None:
    """The test images' paths in evaluation order, or None for a dataset without a file list
    (CIFAR-10, digits) or one that does not match the run's predictions."""
    try:
        records = load_test_files(run.run.path)
    except RunDirError as e:  # the file column stays empty; the rest of the export is still right
        log.warning("%s", e)
        return None
    if records is None or len(records) != len(run.labels):
        return None
    return [str(r.get("path", "")) if isinstance(r, dict) else "" for r in records]


def image_frame(run, idx: np.ndarray, labels: np.ndarray | None = None) -> pd.DataFrame:
    """The leading columns for test images ``idx`` ``(M,)`` of ``run``, in that order; ``labels`` ``(N,)``:
    the label set in use (the reviewed labels of :mod:`.corrected`), the given labels by default."""
    idx = np.asarray(idx, dtype=np.int64)
    names = np.asarray(run.class_names, dtype=object)
    labels, probs = (run.labels if labels is None else labels)[idx], run.probs[idx]
    preds = probs.argmax(1)
    files = file_paths(run)
    rows = np.arange(len(idx))
    return pd.DataFrame({
        "index": idx, "file": [files[i] for i in idx] if files else [""] * len(idx),
        "label": names[labels], "prediction": names[preds],
        "confidence": probs[rows, preds], "p(true)": probs[rows, labels],
    }, columns=COLUMNS)


def gallery_frame(run, cells: tuple[tuple[int, int], ...] | None, sort_by: str,
                  confidence: tuple[float, float] = (0.0, 1.0)) -> pd.DataFrame:
    """A confusion-matrix selection (``cells``; None = every mistake) in the gallery's order, only
    the images whose top-1 probability is in ``confidence`` (the gallery's filter), with each
    image's loss and margin (the other sort keys)."""
    idx = analysis.within_confidence(analysis.sorted_selection(analysis.predictions_of(run), cells, sort_by),
                                     run.probs, *confidence)
    frame = image_frame(run, idx)
    probs = run.probs[idx]
    frame["loss"] = analysis.loss(probs, run.labels[idx])
    frame["margin"] = analysis.margin(probs)
    return frame


def comparison_set(run_a, run_b, key: str, labels: np.ndarray | None = None) -> np.ndarray:
    """The indices ``(M,)`` of comparison set ``key`` (``fixed``/``introduced``/``both``, see
    :func:`analysis.compare`) on ``labels`` ``(N,)`` (the given ones by default), most confident
    mistakes of whichever run is wrong first."""
    if not np.array_equal(run_a.labels, run_b.labels):
        raise ValueError("runs were evaluated on different test labels")
    labels = np.asarray(run_a.labels if labels is None else labels, dtype=np.int64)
    idx = analysis.comparison_sets(labels, run_a.preds, run_b.preds)[key]
    judge = run_a if key == "fixed" else run_b
    return analysis.sort_indices(idx, labels, judge.probs, "confidence")


def comparison_frame(run_a, run_b, key: str, labels: np.ndarray | None = None) -> pd.DataFrame:
    """A comparison set on ``labels`` (see :func:`comparison_set`): the leading columns of run A, then B's
    prediction, confidence and p(true)."""
    idx = comparison_set(run_a, run_b, key, labels)
    frame = image_frame(run_a, idx, labels)
    b = image_frame(run_b, idx, labels)
    frame = frame.rename(columns={c: f"{c} A" for c in ("prediction", "confidence", "p(true)")})
    for c in ("prediction", "confidence", "p(true)"):
        frame[f"{c} B"] = b[c].to_numpy()
    return frame


def threshold_frame(run, positive: int, threshold: float, kind: str,
                    labels: np.ndarray | None = None) -> pd.DataFrame:
    """False negatives (``fn``: the positive class scored below ``threshold``, lowest first) or false
    positives (``fp``: the rest scored at or above it, highest first), with ``p(positive)``, on
    ``labels`` ``(N,)`` (the given ones by default)."""
    labels = run.labels if labels is None else labels
    y, scores = labels == positive, run.probs[:, positive]
    missed = y & (scores < threshold) if kind == "fn" else ~y & (scores >= threshold)
    idx = np.flatnonzero(missed)
    idx = idx[np.argsort(scores[idx] if kind == "fn" else -scores[idx], kind="stable")]
    frame = image_frame(run, idx, labels)
    frame["p(positive)"] = scores[idx]
    return frame


def table_frame(rows: list[dict]) -> pd.DataFrame:
    """A table of the page as it shows it, one dict per row: the overview's per-class table, the
    comparison's table at each run's chosen threshold."""
    return pd.DataFrame(rows)


def filename(*parts: str) -> str:
    """``part1-part2.csv``: anything but letters, digits, ``._-`` replaced, no leading dots (no hidden
    files), each part at most 80 characters (a selection of many cells names them all)."""
    return "-".join(re.sub(r"[^\w.-]+", "_", p).strip("._")[:80] or "_" for p in parts) + ".csv"


def selection_slug(cells, class_names: list[str]) -> str:
    if cells is None:
        return "all-mistakes"
    return "+".join(f"{class_names[t]}-as-{class_names[p]}" for t, p in cells)


def download(frame: pd.DataFrame, name: str) -> dict:
    """What ``dcc.Download`` takes: the frame as CSV (no pandas index column), saved as ``name``."""
    return dcc.send_data_frame(frame.to_csv, name, index=False)
