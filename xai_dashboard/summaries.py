"""One run's metrics, curves and confusion matrix, computed once and kept beside its predictions.

A :class:`RunSummary` is everything the overview and the confusion view show.
Computing it takes scikit-learn (~1.5 s to import here) and ~0.1 s per run, so it
is stored and only read at start-up, as the derived run file :data:`SUMMARY`
(:mod:`trainer.artifacts`: one declaration, atomic writes, a header binding it to
the weights, the test set and the class names):

1. ``RUN_DIR/summary.json``: beside ``predictions.npz``, so it travels with the run
   (the shipped runs carry theirs); written there when the folder is writable;
2. else ``$XAI_CACHE_DIR/analysis/<key>/summary.json`` (default ``~/.cache/xai-dashboard``).

A file bound to anything else (new weights, other data, renamed classes, an older
format) is refused by the artifact reader; the reason is logged and the summary is
recomputed and replaced.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from trainer.artifacts import ArtifactError, declare, read, write

from .analysis import (
    Predictions, confusion, most_confused_pairs, overall_metrics, per_class_metrics, predictions_of,
    reliability, roc_pr_curves,
)

# 5: a class without test images is n/a (NaN) per class and left out of the macro averages
# (4: stored through trainer.artifacts; 3: balanced accuracy, MCC, majority baseline, found counts)
SUMMARY = declare("summary.json", version=5, kind="json", binds=("weights", "test_set", "classes"),
                  producer="xai-dashboard {run}")
SUMMARY_FILE = SUMMARY.name
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    """Everything the overview and confusion views need for one run; JSON-able but for ``cm``."""

    cm: np.ndarray             # (K, K) int64
    overall: dict
    per_class: list[dict]
    curves: list[dict]
    calibration: dict
    pairs: list[tuple[int, int, int]]

    def to_json(self) -> dict:
        return {"cm": self.cm.tolist(), "overall": self.overall, "per_class": self.per_class,
                "curves": self.curves, "calibration": self.calibration, "pairs": [list(p) for p in self.pairs]}

    @classmethod
    def from_json(cls, d: dict) -> "RunSummary":
        return cls(cm=np.asarray(d["cm"], dtype=np.int64), overall=d["overall"], per_class=d["per_class"],
                   curves=d["curves"], calibration=d["calibration"], pairs=[tuple(p) for p in d["pairs"]])


def compute_summary(p: Predictions, class_names: tuple[str, ...]) -> RunSummary:
    k = p.num_classes
    cm = confusion(p.labels, p.preds, k)
    return RunSummary(
        cm=cm, overall=overall_metrics(p.labels, p.probs),
        per_class=per_class_metrics(p.labels, p.preds, list(class_names)),
        curves=roc_pr_curves(p.labels, p.probs), calibration=reliability(p.labels, p.probs),
        pairs=most_confused_pairs(cm),
    )


def summary_key(p: Predictions, class_names: tuple[str, ...]) -> str:
    """Names the user-cache copy: the summary version, the content key and the class names."""
    return hashlib.sha256(json.dumps([SUMMARY.version, p.key, list(class_names)]).encode()).hexdigest()[:24]


def summary_dirs(p: Predictions, class_names: tuple[str, ...], run_dir: Path | None) -> list[Path]:
    """Folders that may hold the summary, in the order they are read and tried for writing."""
    from trainer.sources import CACHE_DIR

    cached = Path(CACHE_DIR) / "analysis" / summary_key(p, class_names)
    return ([Path(run_dir)] if run_dir is not None else []) + [cached]


def binding_meta(p: Predictions, class_names: tuple[str, ...]) -> dict:
    """The ``meta.json`` fields the summary is bound to, recovered from ``p.key``
    (:func:`.analysis.content_key`: ``"<weights sha256>:<test-set fingerprint>"``)."""
    weights, _, fingerprint = p.key.partition(":")
    return {"weights_sha256": weights, "dataset": {"fingerprint": fingerprint}, "class_names": list(class_names)}


def _stored(folder: Path, meta: dict) -> RunSummary | None:
    try:
        data = read(folder, SUMMARY, meta, missing_ok=True)
        return None if data is None else RunSummary.from_json(data)
    except ArtifactError as e:  # stale or foreign: say why, then recompute and replace it
        log.info("%s", e)
    except (KeyError, TypeError, ValueError) as e:
        log.warning("%s: unreadable summary (%s); recomputing", folder / SUMMARY.name, e)
    return None


@lru_cache(maxsize=16)
def summary(p: Predictions, class_names: tuple[str, ...], run_dir: Path | None = None) -> RunSummary:
    """:func:`compute_summary`, memoised in memory and in the first writable of :func:`summary_dirs`.

    A restarted dashboard (or a new gunicorn worker) thus answers its first page without
    recomputing anything or importing scikit-learn; no writable place only costs the work.
    """
    meta, folders = binding_meta(p, class_names), summary_dirs(p, class_names, run_dir)
    for folder in folders:
        found = _stored(folder, meta)
        if found is not None:
            return found
    result = compute_summary(p, class_names)
    for folder in folders:
        try:
            write(folder, SUMMARY, meta, result.to_json())
            break
        except OSError:
            continue
    return result


def summary_of(run) -> RunSummary:
    """The summary of a :class:`~xai_dashboard.store.LoadedRun`, stored beside its predictions."""
    return summary(predictions_of(run), tuple(run.class_names), Path(run.run.path))
