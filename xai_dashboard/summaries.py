"""One run's metrics, curves and confusion matrix, computed once and kept beside its predictions.

A :class:`RunSummary` is everything the overview and the confusion view show.
Computing it takes scikit-learn (~1.5 s to import here) and ~0.1 s per run, so it
is stored and only read at start-up:

1. ``RUN_DIR/summary.json``: beside ``predictions.npz``, so it travels with the run
   (the shipped runs carry theirs); written there when the folder is writable;
2. else ``$XAI_CACHE_DIR/analysis/summary-<key>.json`` (default ``~/.cache/xai-dashboard``).

Both files carry the key they were computed for: the summary format version, the
weights' sha256, the dataset fingerprint and the class names. A file with any
other key (new weights, other data, an older format) is ignored and replaced.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .analysis import (
    Predictions, confusion, most_confused_pairs, overall_metrics, per_class_metrics, predictions_of,
    reliability, roc_pr_curves,
)

SUMMARY_FILE = "summary.json"
SUMMARY_VERSION = 3  # bump when RunSummary's contents change, so older files are ignored


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
    return hashlib.sha256(json.dumps([SUMMARY_VERSION, p.key, list(class_names)]).encode()).hexdigest()[:24]


def summary_paths(p: Predictions, class_names: tuple[str, ...], run_dir: Path | None) -> list[Path]:
    """Where the summary may be stored, in the order they are read and tried for writing."""
    from trainer.sources import CACHE_DIR

    cached = Path(CACHE_DIR) / "analysis" / f"summary-{summary_key(p, class_names)}.json"
    return ([Path(run_dir) / SUMMARY_FILE] if run_dir is not None else []) + [cached]


def _read(path: Path, key: str) -> RunSummary | None:
    try:
        d = json.loads(path.read_text())
        return RunSummary.from_json(d["summary"]) if d.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@lru_cache(maxsize=16)
def summary(p: Predictions, class_names: tuple[str, ...], run_dir: Path | None = None) -> RunSummary:
    """:func:`compute_summary`, memoised in memory and in the first writable of :func:`summary_paths`.

    A restarted dashboard (or a new gunicorn worker) thus answers its first page without
    recomputing anything or importing scikit-learn; no writable place only costs the work.
    """
    from trainer.rundir import write_json

    key, paths = summary_key(p, class_names), summary_paths(p, class_names, run_dir)
    for path in paths:
        found = _read(path, key)
        if found is not None:
            return found
    result = compute_summary(p, class_names)
    record = {"key": key, "version": SUMMARY_VERSION, "predictions": p.key, "class_names": list(class_names),
              "summary": result.to_json()}
    for path in paths:
        try:
            write_json(path, record)
            break
        except OSError:
            continue
    return result


def summary_of(run) -> RunSummary:
    """The summary of a :class:`~xai_dashboard.store.LoadedRun`, stored beside its predictions."""
    return summary(predictions_of(run), tuple(run.class_names), Path(run.run.path))
