"""``RUN_DIR/scoreboard.npz``: deletion and insertion AUC of every attribution method on a stratified
sample of test images, with the random and edge baselines of each image (a :mod:`trainer.artifacts`
file). :mod:`.scoreboard` computes it (torch); reading it and the table's statistics need only numpy
and scipy, so the explanations view shows the table without loading a model.

Arrays (``n`` = images done so far, in the order of ``order``; ``N`` = images asked for)::

    config               str    JSON: {"images": N, "seed", "steps", "seeds", "methods", "skipped",
                                       "baseline_of": {method: "random_pixel" | "random_layer"}, ...}
    order                int64 (N,)  the sample's test indices in scoring order: those a previous run
                                     stored first, then round-robin over the classes (balanced prefixes)
    index, label, target int64 (n,)  test index, true class, the class explained (the prediction)
    <method>.deletion    float64 (n,)   the method's deletion AUC (lower is better), ...insertion
    random_pixel.deletion / .insertion  mean AUC over the random seeds, one value per pixel
    random_layer.deletion / .insertion  the same, noise at the Grad-CAM layer's resolution, upsampled
    edge.deletion / .insertion          the Sobel edge map's AUCs

A method is compared with the random maps as smooth as its own (``baseline_of``). Bound to the
weights, the test set, the architecture and preprocessing and the Grad-CAM layer.
"""
from __future__ import annotations

import json

import numpy as np
from scipy import stats

from trainer.artifacts import ArtifactError, declare, read

SCOREBOARD = declare("scoreboard.npz", version=1, kind="npz",
                     binds=("weights", "test_set", "preprocessing", "gradcam_layer"),
                     producer="xai-dashboard precompute scoreboard {run}")
MEASURES = ("deletion", "insertion")


def load_scoreboard(run_dir, meta: dict) -> tuple[dict | None, str]:
    """``(arrays with "config" parsed, note)``: note says why there is no table (absent, stale) or that
    it covers only part of the sample (an unfinished job); "" for a complete, current file."""
    try:
        data = read(run_dir, SCOREBOARD, meta)
    except ArtifactError as e:
        return None, str(e)
    data = {**data, "config": json.loads(str(data["config"]))}
    done, total = len(data["index"]), len(data["order"])
    if done < total:
        return data, (f"{SCOREBOARD.name}: unfinished, {done} of {total} images scored; "
                      f"{SCOREBOARD.rerun(run_dir)} to continue")
    return data, ""


def t_interval(values) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean and its two-sided 95 % Student-t interval (NaN bounds for one value)."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean()) if len(v) else float("nan")
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=mean, scale=stats.sem(v))
    return mean, float(lo), float(hi)


def paired_test(ours, random, lower_is_better: bool) -> dict:
    """Wilcoxon signed-rank test of ``ours - random`` (paired by image): ``{"p", "median_diff", "sign"}``.

    ``sign`` is "better", "worse" or "tie" by the median difference and the measure's direction
    ("better" on deletion means lower); ``p`` is NaN when every difference is zero.
    """
    diff = np.asarray(ours, dtype=np.float64) - np.asarray(random, dtype=np.float64)
    median = float(np.median(diff)) if len(diff) else float("nan")
    p = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else float("nan")
    gain = -median if lower_is_better else median
    return {"p": p, "median_diff": median, "sign": "better" if gain > 0 else "worse" if gain < 0 else "tie"}


def table_rows(data: dict, label: int | None = None) -> list[dict]:
    """One row per method: mean AUCs with 95 % t-intervals, the same for its matched random maps and
    the edge map, and Wilcoxon against random on each measure; over all images or those of true class
    ``label``. Keys: ``method``, ``n``, ``<m>``, ``<m>_lo``, ``<m>_hi`` for ``m`` in deletion, insertion,
    random_deletion, random_insertion, edge_deletion, edge_insertion, and ``<measure>_p``,
    ``<measure>_vs_random``."""
    keep = np.ones(len(data["index"]), bool) if label is None else np.asarray(data["label"]) == label
    rows = []
    for method in data["config"]["methods"]:
        baseline = data["config"]["baseline_of"][method]
        row = {"method": method, "baseline": baseline, "n": int(keep.sum())}
        for measure in MEASURES:
            columns = {measure: data[f"{method}.{measure}"], f"random_{measure}": data[f"{baseline}.{measure}"],
                       f"edge_{measure}": data[f"edge.{measure}"]}
            for name, values in columns.items():
                row[name], row[f"{name}_lo"], row[f"{name}_hi"] = t_interval(values[keep])
            test = paired_test(columns[measure][keep], columns[f"random_{measure}"][keep], measure == "deletion")
            row[f"{measure}_p"], row[f"{measure}_vs_random"] = test["p"], test["sign"]
        rows.append(row)
    return rows


def format_table(rows: list[dict], labels: dict[str, str] | None = None) -> str:
    """The rows as fixed-width text (what ``precompute scoreboard`` prints): mean [95 % CI] per column."""
    labels = labels or {}
    cols = ("deletion", "random_deletion", "edge_deletion", "insertion", "random_insertion", "edge_insertion")
    cell = lambda r, c: f"{r[c]:.3f} [{r[c + '_lo']:.3f}, {r[c + '_hi']:.3f}]"  # noqa: E731
    head = ["method", "n", *cols, "deletion vs random (Wilcoxon p)", "insertion vs random (Wilcoxon p)"]
    body = [[labels.get(r["method"], r["method"]), str(r["n"]), *(cell(r, c) for c in cols),
             f"{r['deletion_vs_random']} (p={r['deletion_p']:.2g})",
             f"{r['insertion_vs_random']} (p={r['insertion_p']:.2g})"] for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in [head, *body])
