"""The run-directory contract: corrupted or incomplete runs are rejected with a message naming the file."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import CHECKPOINTS
from trainer import rundir
from trainer.rundir import RunDirError, load_run


@pytest.fixture
def run_copy(tmp_path):
    dst = tmp_path / "digits-demo"
    shutil.copytree(CHECKPOINTS / "digits-demo", dst)
    return dst


def _edit_meta(path, **changes):
    meta = json.loads((path / "meta.json").read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k)
        else:
            meta[k] = v
    (path / "meta.json").write_text(json.dumps(meta))


def test_valid_run_loads(run_copy):
    run = load_run(run_copy)
    assert run.meta["arch"] == "lenet5" and len(run.predictions["label"]) == run.meta["dataset"]["num_test"]
    model = run.load_model()
    assert not model.training


@pytest.mark.parametrize("damage, file, words", [
    (lambda p: (p / "predictions.npz").unlink(), "predictions.npz", "missing"),
    (lambda p: (p / "model.safetensors").unlink(), "model.safetensors", "missing"),
    (lambda p: (p / "meta.json").unlink(), "meta.json", "missing"),
    (lambda p: (p / "meta.json").write_text("{ not json"), "meta.json", "not valid JSON"),
    (lambda p: _edit_meta(p, class_names=["a", "b"]), "meta.json", "class_names"),
    (lambda p: _edit_meta(p, gradcam_layer=None), "meta.json", "gradcam_layer"),
    (lambda p: _edit_meta(p, schema_version=99), "meta.json", "schema_version"),
    (lambda p: _edit_meta(p, std=[0.0]), "meta.json", "std"),
    (lambda p: (p / "history.json").write_text('{"epoch": 1}'), "history.json", "list"),
    (lambda p: (p / "predictions.npz").write_bytes(b"PK\x03\x04 truncated"), "predictions.npz", "unreadable"),
])
def test_damaged_run_is_rejected_naming_the_file(run_copy, damage, file, words):
    damage(run_copy)
    with pytest.raises(RunDirError) as e:
        load_run(run_copy)
    assert file in str(e.value) and words in str(e.value)


def test_tampered_weights_fail_the_sha256_check(run_copy):
    blob = bytearray((run_copy / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (run_copy / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(RunDirError, match="sha256"):
        load_run(run_copy)


def test_predictions_from_other_weights_are_rejected(run_copy):
    run = load_run(run_copy)
    p = run.predictions
    rundir.write_predictions(run_copy, index=p["index"], label=p["label"], logits=p["logits"],
                             embedding=p["embedding"], weights_sha256="0" * 64)
    with pytest.raises(RunDirError, match="other weights"):
        load_run(run_copy)


def test_predictions_with_wrong_count_are_rejected(run_copy):
    p = load_run(run_copy).predictions
    rundir.write_predictions(run_copy, index=p["index"][:10], label=p["label"][:10], logits=p["logits"][:10],
                             embedding=p["embedding"][:10], weights_sha256=p["weights_sha256"])
    with pytest.raises(RunDirError, match="10 predictions"):
        load_run(run_copy)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "meta.json"
    rundir.write_json(target, {"a": 1})

    def boom(f):
        f.write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        rundir.atomic_write(target, boom, mode="w")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]


def test_find_runs_lists_shipped_runs():
    found = {p.name for p in rundir.find_runs(CHECKPOINTS)}
    assert "digits-demo" in found
    assert np.all([(p / "meta.json").is_file() for p in rundir.find_runs(CHECKPOINTS)])
