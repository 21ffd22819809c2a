"""One bad run must not stop the dashboard: damaged copies of the digits demo, opened beside the good one.

Each case damages one thing (a meta.json field's type, range or encoding, a
truncated or garbled binary, a non-numeric history, a symlink leading out of
the run) and checks that the store opens the good run, lists the bad one in
``skipped`` with a reason naming the file and the field, and that the app
serves its pages and API with the good run only and says in the banner which
run was refused. The digits demo needs no external data, so this runs anywhere.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dash import html

from tests.conftest import CHECKPOINTS
from xai_dashboard.app import banner, create_app
from xai_dashboard.store import RunStore

GOOD = CHECKPOINTS / "digits-demo"
BAD = "broken-run"


def _meta(path: Path, *keys_and_value) -> None:
    """Set ``meta[k1][k2]... = value`` (``...`` as the value deletes the key) and rewrite meta.json."""
    *keys, value = keys_and_value
    meta = json.loads((path / "meta.json").read_text())
    node = meta
    for k in keys[:-1]:
        node = node[k]
    if value is ...:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    (path / "meta.json").write_text(json.dumps(meta))  # NaN is written as the bare NaN Python's json reads


def _truncate(path: Path, name: str) -> None:
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[: len(data) // 2])


def _predictions(path: Path, **changes) -> None:
    """Rewrite predictions.npz with some arrays replaced (all else, the weights' sha256 included, kept)."""
    with np.load(path / "predictions.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(path / "predictions.npz", **{**arrays, **changes})


def _weights(path: Path, blob: bytes) -> None:
    """Replace the weights and record their sha256, so that only the file's format can give it away."""
    (path / "model.safetensors").write_bytes(blob)
    _meta(path, "weights_sha256", hashlib.sha256(blob).hexdigest())


def _link_outside(path: Path, name: str) -> None:
    """Move a run file out of the run directory and leave a symlink to it: same content, wrong place."""
    outside = path.parent / f"elsewhere-{name}"
    (path / name).rename(outside)
    (path / name).symlink_to(outside)


def _history(path: Path, records) -> None:
    (path / "history.json").write_text(json.dumps(records))


HEADER = (64).to_bytes(8, "little")
CASES = {
    # meta.json: every field wrong in type, range or consistency
    "std-not-a-number": (lambda p: _meta(p, "std", ["x"]), "meta.json", "std.0"),
    "std-nan": (lambda p: _meta(p, "std", [float("nan")]), "meta.json", "std.0"),
    "std-zero": (lambda p: _meta(p, "std", [0.0]), "meta.json", "std.0"),
    "std-per-channel": (lambda p: _meta(p, "std", [0.3, 0.3, 0.3]), "meta.json", "std"),
    "mean-a-string": (lambda p: _meta(p, "mean", "0.5"), "meta.json", "mean"),
    "input-size-huge-float": (lambda p: _meta(p, "input_size", 1e9), "meta.json", "input_size"),
    "input-size-huge-int": (lambda p: _meta(p, "input_size", 10**9), "meta.json", "input_size"),
    "input-size-zero": (lambda p: _meta(p, "input_size", 0), "meta.json", "input_size"),
    "input-size-a-string": (lambda p: _meta(p, "input_size", "32"), "meta.json", "input_size"),
    "num-classes-mismatch": (lambda p: _meta(p, "num_classes", 3), "meta.json", "class_names"),
    "num-classes-one": (lambda p: _meta(p, "num_classes", 1), "meta.json", "num_classes"),
    "class-names-not-strings": (lambda p: _meta(p, "class_names", list(range(10))), "meta.json", "class_names.0"),
    "class-names-repeated": (lambda p: _meta(p, "class_names", ["a"] * 10), "meta.json", "class_names"),
    "in-channels-two": (lambda p: _meta(p, "in_channels", 2), "meta.json", "in_channels"),
    "in-channels-bool": (lambda p: _meta(p, "in_channels", True), "meta.json", "in_channels"),
    "layers-numbers": (lambda p: _meta(p, "layers", [1, 2]), "meta.json", "layers.0"),
    "layer-shape-zero": (lambda p: _meta(p, "layers", [{"name": "features.block2", "shape": [0]}]),
                         "meta.json", "layers.0.shape.0"),
    "gradcam-layer-unknown": (lambda p: _meta(p, "gradcam_layer", "features.nope"), "meta.json", "gradcam_layer"),
    "arch-unknown": (lambda p: _meta(p, "arch", "transformer9000"), "meta.json", "arch"),
    "arch-kwargs-a-list": (lambda p: _meta(p, "arch_kwargs", []), "meta.json", "arch_kwargs"),
    "dataset-spec-a-number": (lambda p: _meta(p, "dataset", "spec", 123), "meta.json", "dataset.spec"),
    "test-subset-a-string": (lambda p: _meta(p, "dataset", "test_subset", "abc"), "meta.json", "dataset.test_subset"),
    "num-test-zero": (lambda p: _meta(p, "dataset", "num_test", 0), "meta.json", "dataset.num_test"),
    "fingerprint-a-path": (lambda p: _meta(p, "dataset", "fingerprint", "../../etc"), "meta.json",
                           "dataset.fingerprint"),
    "dataset-missing": (lambda p: _meta(p, "dataset", ...), "meta.json", "dataset"),
    "sha256-not-hex": (lambda p: _meta(p, "weights_sha256", "zz"), "meta.json", "weights_sha256"),
    "schema-version-99": (lambda p: _meta(p, "schema_version", 99), "meta.json", "schema_version"),
    "seed-a-string": (lambda p: _meta(p, "seed", "0"), "meta.json", "seed"),
    "timings-not-numbers": (lambda p: _meta(p, "timings", "wall_seconds", "slow"), "meta.json",
                            "timings.wall_seconds"),
    # meta.json: not a JSON object at all
    "meta-not-utf8": (lambda p: (p / "meta.json").write_bytes("{\"arch\": \"l\xe9net\"}".encode("latin-1")),
                      "meta.json", "UTF-8"),
    "meta-truncated": (lambda p: _truncate(p, "meta.json"), "meta.json", "not valid JSON"),
    "meta-a-list": (lambda p: (p / "meta.json").write_text("[1, 2]"), "meta.json", "JSON object"),
    "meta-nested-too-deep": (lambda p: (p / "meta.json").write_text("[" * 100_000), "meta.json", "not valid JSON"),
    # history.json
    "history-not-numbers": (lambda p: _history(p, [{"epoch": 1, "train_loss": "low"}]), "history.json",
                            "0.train_loss"),
    "history-an-object": (lambda p: _history(p, {"epoch": 1}), "history.json", "list"),
    # predictions.npz
    "predictions-truncated": (lambda p: _truncate(p, "predictions.npz"), "predictions.npz", "unreadable"),
    "predictions-garbled": (lambda p: (p / "predictions.npz").write_bytes(b"\x00" * 512), "predictions.npz",
                            "unreadable"),
    "predictions-logits-text": (lambda p: _predictions(p, logits=np.full((360, 10), "x")), "predictions.npz",
                                "logits"),
    "predictions-labels-out-of-range": (lambda p: _predictions(p, label=np.full(360, 99)), "predictions.npz",
                                        "labels outside"),
    "predictions-embedding-scalar": (lambda p: _predictions(p, embedding=np.float16(1)), "predictions.npz",
                                     "shapes"),
    # model.safetensors (sha256 updated to match, so only the header check can catch these)
    "weights-header-garbled": (lambda p: _weights(p, HEADER + b"{not json" + b" " * 60), "model.safetensors",
                               "safetensors"),
    "weights-header-too-long": (lambda p: _weights(p, (1 << 40).to_bytes(8, "little") + b"{}"),
                                "model.safetensors", "safetensors"),
    "weights-truncated": (lambda p: _weights(p, (p / "model.safetensors").read_bytes()[:1000]), "model.safetensors",
                          "safetensors"),
    "weights-tampered": (lambda p: (p / "model.safetensors").write_bytes(
        (p / "model.safetensors").read_bytes()[:-1] + b"\x00"), "model.safetensors", "sha256"),
    # links
    "meta-links-outside": (lambda p: _link_outside(p, "meta.json"), "meta.json", "outside the run directory"),
    "predictions-link-outside": (lambda p: _link_outside(p, "predictions.npz"), "predictions.npz", "outside"),
    "weights-dangling-link": (lambda p: ((p / "model.safetensors").unlink(),
                                         (p / "model.safetensors").symlink_to(p / "gone")),
                              "model.safetensors", "dangling"),
    "history-dangling-link": (lambda p: ((p / "history.json").unlink(), (p / "history.json").symlink_to("/nope")),
                              "history.json", "dangling"),
}


def _texts(component) -> list[str]:
    """Every string in a Dash component tree, in document order."""
    if isinstance(component, str):
        return [component]
    children = getattr(component, "children", None) if not isinstance(component, (list, tuple)) else component
    if children is None:
        return []
    items = children if isinstance(children, (list, tuple)) else [children]
    return [t for c in items for t in _texts(c)]


@pytest.mark.parametrize("damage, file, words", CASES.values(), ids=CASES.keys())
def test_a_damaged_run_is_skipped_and_the_good_one_served(tmp_path, damage, file, words):
    bad = tmp_path / BAD
    shutil.copytree(GOOD, bad)
    damage(bad)
    store = RunStore.from_dirs([GOOD, bad])

    assert store.names == ["digits-demo"]
    reason = store.skipped[BAD]
    assert file in reason and words in reason, reason
    assert "\n" not in reason  # one line, for logs and the API
    assert len(store.problems) == 1 and store.problems[0].runs == (BAD,)

    app = create_app(store=store)
    client = app.server.test_client()
    assert client.get("/").status_code == 200
    runs = client.get("/api/runs")
    assert runs.status_code == 200
    assert [r["name"] for r in runs.get_json()["runs"]] == ["digits-demo"]
    assert runs.get_json()["skipped"] == {BAD: reason}
    shown = " ".join(_texts(banner(store)))
    assert f"{BAD} could not be opened: {file}" in shown and reason in shown


def test_runs_refused_for_the_same_reason_share_one_sentence(tmp_path):
    """Five runs with the same broken field read as one line naming them, not five paragraphs."""
    dirs = []
    for i in range(5):
        shutil.copytree(GOOD, tmp_path / f"bad{i}")
        _meta(tmp_path / f"bad{i}", "std", ["x"])
        dirs.append(tmp_path / f"bad{i}")
    shutil.copytree(GOOD, tmp_path / "other")
    _meta(tmp_path / "other", "arch", "nope")
    store = RunStore.from_dirs([GOOD, *dirs, tmp_path / "other"])

    assert store.names == ["digits-demo"] and len(store.skipped) == 6
    assert [p.runs for p in store.problems] == [tuple(f"bad{i}" for i in range(5)), ("other",)]
    assert store.banner == (
        "bad0, bad1, bad2 and 2 more could not be opened: meta.json std.0: Input should be a valid number; "
        "correct meta.json or retrain the run. "
        "other could not be opened: meta.json arch: unknown model 'nope'; correct meta.json or retrain the run.")
    shown = banner(store)
    sentences = [c.children[0].children for c in shown.children]
    assert sentences == [p.sentence for p in store.problems]
    details = [c.children[1] for c in shown.children]
    assert all(isinstance(d, html.Details) for d in details)
    assert len(details[0].children[1].children) == 5  # each run's full reason, folded


def test_cifar_runs_without_their_data_say_the_fix_once(tmp_path):
    """The shipped CIFAR-10 runs with an unreadable data folder: one sentence with the fix, the
    demo opened instead; the long per-run explanation only in the folded details."""
    cifar = [d for d in sorted(CHECKPOINTS.iterdir()) if d.name.startswith("cifar10-")]
    if len(cifar) < 2:
        pytest.skip("fewer than two shipped CIFAR-10 runs")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("cifar10_train.npz", "cifar10_test.npz"):
        (data / name).write_bytes(b"not an npz archive")
    store = RunStore.from_dirs(cifar, str(data))

    assert store.names == ["digits-demo"]
    assert len(store.problems) == 1 and set(store.problems[0].runs) == {d.name for d in cifar}
    assert store.note.startswith("Showing the offline digits demo")
    assert store.banner.count("cifar10_train.npz") == 1
    sentence = store.problems[0].sentence
    assert "--data-dir" in sentence and "XAI_DATA_DIR" in sentence and len(sentence) < 300
    assert all(str(data) in reason for reason in store.problems[0].details)
