"""Every analysis view on runs of 2, 3, 10 and 100 classes, through the real Dash callbacks.

The runs are honest run directories: an image folder of small PNGs in ``tmp_path``
(described by ``trainer.data.load_dataset``, read back by the store), a real (untrained) ``mlp`` whose sha256 the
meta records, and logits of a noisy, imbalanced classifier made up here. Each
callback is called as the browser calls it, over ``/_dash-update-component``.
"""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.models import create_model
from trainer.rundir import write_json, write_predictions, write_weights
from trainer.data import load_dataset
from xai_dashboard import analysis, figures
from xai_dashboard.app import create_app
from xai_dashboard.store import RunStore

ROOT = Path(__file__).resolve().parent.parent
SIZE = 8  # pixels: the smallest image the mlp and the thumbnails handle; the views never look closer


def make_image_folder(root: Path, names: list[str], train: list[int], test: list[int], seed: int = 0) -> str:
    """``root/{train,test}/CLASS/*.png`` with ``train[c]`` / ``test[c]`` random images per class; returns the spec."""
    rng = np.random.default_rng(seed)
    for split, counts in (("train", train), ("test", test)):
        for name, n in zip(names, counts):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return f"imagefolder:{root}"


def noisy_logits(labels: np.ndarray, k: int, skill: float, seed: int, bias: np.ndarray | None = None) -> np.ndarray:
    """``(N, K)`` logits: Gaussian noise plus ``skill`` on the true class plus a per-class ``bias``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, (len(labels), k)) + skill * np.eye(k)[labels]
    return (logits + (0 if bias is None else bias)).astype(np.float32)


def make_run(out: Path, spec: str, logits_of, *, class_weighting: bool = False) -> Path:
    """A run directory for the image folder ``spec``; ``logits_of(labels, k)`` gives its ``(N, K)`` logits."""
    # The trainer's own description of the data (the dataset block of meta.json, fingerprint included),
    # so the store re-reads and accepts exactly what a trained run would record.
    ds = load_dataset(spec, input_size=SIZE, train=False)
    labels = ds.test_y.numpy()
    k = len(ds.classes)
    model = create_model("mlp", num_classes=k, in_channels=3, input_size=SIZE)
    out.mkdir(parents=True)
    sha = write_weights(out, model.state_dict())
    logits = logits_of(labels, k)
    write_predictions(out, index=np.arange(len(labels)), label=labels, logits=logits,
                      embedding=np.zeros((len(labels), 4)), weights_sha256=sha)
    meta = json.loads((ROOT / "checkpoints" / "digits-demo" / "meta.json").read_text())
    meta.update(
        arch="mlp", arch_kwargs={"input_size": SIZE}, num_classes=k, in_channels=3, class_names=list(ds.classes),
        input_size=SIZE, mean=[0.5] * 3, std=[0.25] * 3, gradcam_layer=model.gradcam_layer,
        layers=[{"name": "hidden.block1", "shape": [512]}, {"name": "hidden.block2", "shape": [256]}],
        weights_sha256=sha, num_parameters=sum(p.numel() for p in model.parameters()), epochs_completed=None,
        test_accuracy=float((logits.argmax(1) == labels).mean()), test_accuracy_tta=None,
        dataset={**ds.describe(), "spec": spec, "test_subset": None, "train_subset": None},
    )
    meta["config"] = {**meta["config"], "model": "mlp", "dataset": spec, "class_weighting": class_weighting,
                      "out": str(out)}
    write_json(out / "meta.json", meta)
    write_json(out / "history.json", [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.2 / e, "train_acc": 0.3 * e,
                                       "val_acc": 0.28 * e, "lr": 0.01, "seconds": 0.1} for e in (1, 2, 3)])
    return out


def class_names(k: int) -> list[str]:
    return ["cat", "dog"] if k == 2 else [f"c{i:03d}" for i in range(k)]


@pytest.fixture(scope="module", params=[2, 3, 10, 100])
def runs(request, tmp_path_factory):
    """Two runs (a weak and a better model) on one imbalanced test set of K classes, and their store."""
    k = request.param
    root = tmp_path_factory.mktemp(f"classes{k}")
    test = [max(1, 60 // (i + 1)) for i in range(k)] if k <= 10 else [1 + i % 7 for i in range(k)]
    spec = make_image_folder(root / "data", class_names(k), [2] * k, test)
    bias = np.zeros(k)
    bias[0] = 1.5  # leans towards the majority class, like an unweighted model on imbalanced data
    a = make_run(root / "weak", spec, lambda y, k: noisy_logits(y, k, 1.0, seed=1, bias=bias))
    b = make_run(root / "better", spec, lambda y, k: noisy_logits(y, k, 2.5, seed=2), class_weighting=True)
    store = RunStore.from_dirs([a, b])
    assert store.names == ["weak", "better"], store.banner
    yield k, store
    shutil.rmtree(root, ignore_errors=True)


def call(app, output: str, values: dict, triggered: str | None = None) -> dict:
    """POST the callback whose outputs include ``output`` (``"id.prop"``) as the browser would.

    ``values`` maps ``"id.prop"`` of its inputs and states to values; pattern-matching inputs
    (the pair buttons) get an empty list. Returns ``response`` of the answer, or {} for a 204.
    """
    key = next(k for k in app.callback_map if output in k.strip(".").split("..."))
    spec = app.callback_map[key]
    outputs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]} for o in key.strip(".").split("...")]

    def arg(d):
        name = f"{d['id']}.{d['property']}"
        return [] if d["id"].startswith("{") else {"id": d["id"], "property": d["property"], "value": values.get(name)}

    body = {"output": key, "outputs": outputs if key.startswith("..") else outputs[0],
            "changedPropIds": [triggered] if triggered else [],
            "inputs": [arg(d) for d in spec["inputs"]], "state": [arg(d) for d in spec["state"]]}
    r = app.server.test_client().post("/_dash-update-component", json=body)
    assert r.status_code in (200, 204), r.get_data(as_text=True)[-2000:]
    return r.get_json()["response"] if r.status_code == 200 else {}


def array(v) -> np.ndarray:
    """A figure's data array as sent to the browser: a list, or plotly's base64 typed array."""
    if isinstance(v, dict) and "bdata" in v:
        shape = [int(d) for d in str(v.get("shape", "-1")).split(",")]
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).reshape(shape)
    return np.asarray(v)


def _drawn(fig: dict) -> bool:
    return bool(fig["data"]) and fig["layout"]["xaxis"].get("visible", True) is not False


def test_overview_renders_for_any_number_of_classes(runs):
    k, store = runs
    app = create_app(store=store)
    for name in store.names:
        resp = call(app, "overview-cards.children", {"run-select.value": name})
        labels = [c["props"]["children"][0]["props"]["children"] for c in resp["overview-cards"]["children"]]
        assert {"Accuracy", "Balanced accuracy", "MCC"} <= set(labels)
        assert ("Top-3 accuracy" in labels) == (k > 3)
        assert len(resp["class-table"]["rowData"]) == k
        for graph in ("class-bars", "history-graph", "roc-graph", "pr-graph", "reliability-graph"):
            assert resp[graph]["figure"]["data"], graph
        # ROC/PR legends stay readable: at most MAX_CURVES classes drawn (plus the chance line)
        assert len(resp["roc-graph"]["figure"]["data"]) <= figures.MAX_CURVES + 1
        assert len(resp["pr-graph"]["figure"]["data"]) == min(k, figures.MAX_CURVES)


def test_confusion_view_renders_and_stays_readable(runs):
    k, store = runs
    app = create_app(store=store)
    run = store.get(store.default)
    resp = call(app, "confusion-matrix.figure", {"run-select.value": run.name, "cm-mode.value": "counts",
                                                 "view-tabs.value": "errors"})
    fig = resp["confusion-matrix"]["figure"]
    heat = fig["data"][0]
    assert array(heat["z"]).shape == (k, k) and fig["layout"]["height"] <= 1200
    assert ("texttemplate" in heat) == (k <= figures.TEXT_MAX_CLASSES)  # 100 classes: hover only
    gallery = call(app, "gallery.children", {"run-select.value": run.name, "gallery-sort.value": "loss",
                                             "view-tabs.value": "errors"}, triggered="run-select.value")
    assert gallery["gallery-count"]["children"] == str(int((run.preds != run.labels).sum()))
    detail = call(app, "detail-top5.figure", {"selected-image.data": {"run": run.name, "index": 0}})
    assert _drawn(detail["detail-top5"]["figure"])


def test_threshold_view_renders_for_every_class(runs):
    k, store = runs
    app = create_app(store=store)
    run = store.get(store.default)
    picked = call(app, "threshold-class.value", {"run-select.value": run.name, "view-tabs.value": "threshold"})
    counts = np.bincount(run.labels, minlength=k)
    assert picked["threshold-class"]["value"] == int(np.argmin(counts))  # the minority class by default
    assert len(picked["threshold-class"]["options"]) == k
    for positive in sorted({0, k - 1, picked["threshold-class"]["value"]}):
        values = {"threshold-slider.value": 0.3, "threshold-class.value": positive, "run-select.value": run.name,
                  "view-tabs.value": "threshold", "chosen-thresholds.data": {}}
        resp = call(app, "threshold-cards.children", values)
        for graph in ("threshold-cm", "threshold-roc", "threshold-pr"):
            assert _drawn(resp[graph]["figure"]), (positive, graph)
        assert resp["chosen-thresholds"]["data"] == {run.name: {"positive": positive, "threshold": 0.3}}
        hints = [c["props"]["children"][2]["props"]["children"] for c in resp["threshold-cards"]["children"]]
        assert len(hints) == 7 and all("prevalence" in h for h in hints)
        chosen = call(app, "threshold-slider.value", {"threshold-class.value": positive, "run-select.value": run.name,
                                                      "threshold-recall.value": 0.8, "threshold-cost.value": 5,
                                                      "threshold-by-recall.n_clicks": 1},
                      triggered="threshold-by-recall.n_clicks")
        t = chosen["threshold-slider"]["value"]
        y = run.labels == positive
        assert np.mean(run.probs[y, positive] >= t) >= 0.8


def test_compare_renders_and_pages_every_gallery_on_the_server(runs):
    k, store = runs
    app = create_app(store=store)
    a, b = store.names
    values = {"compare-a.value": a, "compare-b.value": b, "view-tabs.value": "compare", "chosen-thresholds.data": {}}
    resp = call(app, "compare-summary.children", values)
    assert _drawn(resp["compare-accuracy"]["figure"]) and _drawn(resp["compare-cm-diff"]["figure"])
    assert "balanced accuracy" in json.dumps(resp["compare-summary"]["children"])
    assert "run" in json.dumps(resp["compare-thresholds"]["children"])
    ra, rb = store.get(a), store.get(b)
    sets = analysis.comparison_sets(ra.labels, ra.preds, rb.preds)
    for key in ("fixed", "introduced", "both"):
        first = call(app, f"compare-{key}.children", values, triggered="compare-a.value")
        assert first[f"compare-{key}-count"]["children"] == str(len(sets[key]))
        pages = max(1, -(-len(sets[key]) // analysis.PAGE_SIZE))
        nxt = call(app, f"compare-{key}.children",
                   {**values, f"compare-{key}-next.n_clicks": 1, f"compare-{key}-page.data": 0},
                   triggered=f"compare-{key}-next.n_clicks")
        assert nxt[f"compare-{key}-page-label"]["children"] == f"{min(2, pages)} / {pages}"
        shown = [item["props"]["data-index"] for item in nxt[f"compare-{key}"]["children"]
                 if "data-index" in item["props"]]
        judge = ra if key == "fixed" else rb
        order = analysis.sort_indices(sets[key], ra.labels, judge.probs, "confidence")
        page = min(1, pages - 1)
        assert shown == order[page * analysis.PAGE_SIZE:(page + 1) * analysis.PAGE_SIZE].tolist()
