"""``RUN_DIR/stress.npz``: the run's predictions on every corruption x severity of its test images
(:mod:`.corruptions`), a :mod:`trainer.artifacts` file; :mod:`.stress` computes it. Reading it and
the accuracy tables need numpy only; regenerating a corrupted image (:func:`corrupted_test_images`)
imports the corruptions (and torch) when first called.

Arrays (``n`` test images, ``C`` corruptions done so far, ``S`` = 5 severities)::

    config      str   JSON: {"seed", "images", "corruptions": [all names, in order], "severities",
                             "precision", "channels"}
    index       int64 (n,)   test indices evaluated (sorted)
    label       int64 (n,)   true classes
    clean_pred  (n,)         predicted class on the clean image (uint8, or int16 beyond 256 classes)
    clean_prob  float16 (n,) probability of the true class on the clean image
    pred        (C, S, n)    predicted class on the corrupted image, corruption ``config["corruptions"][c]``
    prob        float16 (C, S, n)  probability of the true class on it

Corruptions are done in order and the file is rewritten after each, so ``C`` below the number of
names means an unfinished job. Bound to the weights, the test set and the preprocessing.
"""
from __future__ import annotations

import json

import numpy as np

from trainer.artifacts import ArtifactError, declare, read

STRESS = declare("stress.npz", version=1, kind="npz", binds=("weights", "test_set", "preprocessing"),
                 producer="xai-dashboard precompute stress {run}")
SEVERITIES = (1, 2, 3, 4, 5)
BROKEN_COLUMNS = ("index", "label", "clean prediction", "clean p(true)", "corrupted prediction",
                  "corrupted p(true)", "corruption", "severity")
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, Pillow's RGB -> L


def load_stress(run_dir, meta: dict) -> tuple[dict | None, str]:
    """``(arrays with "config" parsed, note)``: the note says why there is none, or that the job is unfinished."""
    try:
        data = read(run_dir, STRESS, meta)
    except ArtifactError as e:
        return None, str(e)
    data = {**data, "config": json.loads(str(data["config"]))}
    done, total = len(data["pred"]), len(data["config"]["corruptions"])
    if done < total:
        return data, f"{STRESS.name}: unfinished, {done} of {total} corruptions evaluated; {STRESS.rerun(run_dir)}"
    return data, ""


def accuracy_table(data: dict, label: int | None = None) -> dict:
    """``{"clean": accuracy, "corruptions": {name: [accuracy at severity 1 .. 5]}, "images": n}`` over all
    evaluated images or those of true class ``label`` (NaN when it has none); corruptions done so far only."""
    keep = np.ones(len(data["label"]), bool) if label is None else data["label"] == label
    truth = data["label"][keep]
    right = lambda pred: float((pred[..., keep] == truth).mean()) if keep.any() else float("nan")  # noqa: E731
    names = data["config"]["corruptions"][:len(data["pred"])]
    return {"clean": right(data["clean_pred"]), "images": int(keep.sum()),
            "corruptions": {name: [right(data["pred"][c, s]) for s in range(len(SEVERITIES))]
                            for c, name in enumerate(names)}}


def summary(table: dict) -> dict:
    """Mean corruption accuracy (over every corruption and severity), its relative drop from clean
    (``1 - mean / clean``), and the means per corruption and per severity."""
    grid = np.array(list(table["corruptions"].values()), dtype=np.float64).reshape(-1, len(SEVERITIES))
    mean = float(grid.mean()) if grid.size else float("nan")
    clean = table["clean"]
    return {"clean": clean, "mean": mean, "relative_drop": 1 - mean / clean if clean else float("nan"),
            "per_corruption": dict(zip(table["corruptions"], grid.mean(1).tolist())),
            "per_severity": grid.mean(0).tolist() if grid.size else [float("nan")] * len(SEVERITIES)}


def broken(data: dict, corruption: str, severity: int, label: int | None = None) -> np.ndarray:
    """Positions (into ``data["index"]``) of the images this corruption breaks at ``severity``: right when
    clean, wrong when corrupted; of true class ``label`` if given. Most confidently broken first (the
    largest fall in the true class's probability), ties by test index."""
    c, s = data["config"]["corruptions"].index(corruption), severity - 1
    hit = (data["clean_pred"] == data["label"]) & (data["pred"][c, s] != data["label"])
    if label is not None:
        hit &= data["label"] == label
    pos = np.flatnonzero(hit)
    fall = data["clean_prob"][pos].astype(np.float32) - data["prob"][c, s, pos].astype(np.float32)
    return pos[np.lexsort((data["index"][pos], -fall))]


def heatmap_rows(table: dict, scope: str) -> list[dict]:
    """The heatmap of ``table`` (:func:`accuracy_table`) as rows, as its CSV holds them: each corruption's
    accuracy at severities 1-5 and its mean, then a "mean" row of the per-severity means; ``scope``
    (the classes the table covers) in every row."""
    s = summary(table)

    def row(name: str, accs, mean: float) -> dict:
        return {"class": scope, "corruption": name, **{f"severity {k}": a for k, a in zip(SEVERITIES, accs)},
                "mean": mean}

    return [*(row(name, accs, s["per_corruption"][name]) for name, accs in table["corruptions"].items()),
            row("mean", s["per_severity"], s["mean"])]


def broken_rows(data: dict, corruption: str, severity: int, label: int | None, class_names) -> list[dict]:
    """The images :func:`broken` lists (same order), one row each: test ``index``, ``label`` (true class),
    the clean and the corrupted prediction (class names) with the true class's probability under each,
    the corruption and the severity."""
    c, s = data["config"]["corruptions"].index(corruption), severity - 1
    names = list(class_names)
    return [dict(zip(BROKEN_COLUMNS, (
        int(data["index"][p]), names[int(data["label"][p])], names[int(data["clean_pred"][p])],
        float(data["clean_prob"][p]), names[int(data["pred"][c, s, p])], float(data["prob"][c, s, p]),
        corruption, severity))) for p in broken(data, corruption, severity, label).tolist()]


def corrupted_test_images(images: np.ndarray, indices, corruption: str, severity: int, seed: int) -> np.ndarray:
    """uint8 ``(M, C, H, W)``: test images ``images`` ``(M, C, H, W)`` (test indices ``indices``, their keys)
    corrupted exactly as the stress test did. A one-channel image is corrupted as its grey RGB copy and
    brought back to one channel by its luma (ITU-R 601, rounded)."""
    from .corruptions import corrupt

    hwc = np.asarray(images).transpose(0, 2, 3, 1)
    grey = hwc.shape[-1] == 1
    rgb = np.repeat(hwc, 3, axis=-1) if grey else np.ascontiguousarray(hwc)
    out = corrupt(rgb, corruption, severity, seed=seed, keys=indices)
    if grey:
        out = np.clip(np.rint(out @ LUMA), 0, 255).astype(np.uint8)[..., None]
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def sample_note(data: dict, num_test: int) -> str:
    """What the evaluated images are, in words, when they are not the whole test set of ``num_test`` images:
    a class-stratified sample (:func:`.stress.sample`), whose accuracies weigh the classes by their counts
    in the sample, not in the test set; so with equal counts its clean accuracy is the sample's balanced
    accuracy (mean per-class accuracy), not the run's test accuracy. "" for the whole test set."""
    n = len(data["index"])
    if n >= num_test:
        return ""
    counts = np.bincount(data["label"])
    low, high = int(counts[counts > 0].min()), int(counts.max())
    head = f"a class-stratified sample of {n:,} of the {num_test:,} test images"
    if low == high:
        return (f"{head}, {low:,} per class: every class weighs the same, so these accuracies are balanced "
                f"accuracies (mean per-class accuracy), not the run's test accuracy")
    return (f"{head}, {low:,} to {high:,} per class (small classes taken whole), not in the test set's "
            f"proportions: these accuracies weigh the classes differently from the run's test accuracy")


def format_table(table: dict, sample: str = "") -> str:
    """The accuracy table as fixed-width text (what ``precompute stress`` prints): one row per corruption
    with its five severities and mean, then the per-severity means, the clean and mean corruption accuracy;
    ``sample`` (:func:`sample_note`) comes before those when the images are a sample."""
    s = summary(table)
    cell = lambda v: f"{100 * v:6.2f}"  # noqa: E731
    head = f"{'corruption':18s} " + " ".join(f"{'sev ' + str(k):>6s}" for k in SEVERITIES) + "   mean"
    rows = [f"{name:18s} " + " ".join(cell(v) for v in accs) + " " + cell(s["per_corruption"][name])
            for name, accs in table["corruptions"].items()]
    rows.append(f"{'mean':18s} " + " ".join(cell(v) for v in s["per_severity"]) + " " + cell(s["mean"]))
    foot = (f"accuracy in % on {table['images']:,} test images; clean {100 * s['clean']:.2f} %, mean corruption "
            f"{100 * s['mean']:.2f} %, relative drop {100 * s['relative_drop']:.1f} %")
    return "\n".join([head, *rows, *([f"images: {sample}"] if sample else []), foot])


def robustness_json(run) -> tuple[dict | None, str]:
    """``GET /api/robustness``'s body for a LoadedRun: ``{"run", "clean", "corruptions": {name: [5 accuracies]},
    "images", "complete"}``, or ``(None, why not)`` when the run has no usable stress.npz."""
    data, note = load_stress(run.run.path, run.meta)
    if data is None:
        return None, note
    table = accuracy_table(data)
    return {"run": run.name, "clean": table["clean"], "corruptions": table["corruptions"], "images": table["images"],
            "complete": not note}, ""
