"""The run-directory contract: corrupted or incomplete runs are rejected with a message naming the file."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import CHECKPOINTS, ROOT
from trainer import rundir
from trainer.meta_schema import MODEL_NAMES, RunMeta
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


@pytest.mark.parametrize("run_dir", rundir.find_runs(CHECKPOINTS), ids=lambda p: p.name)
def test_shipped_runs_load_unchanged(run_dir):
    """Validation normalises, but a valid file must read back exactly as written."""
    run = load_run(run_dir, check_predictions=False)
    assert run.meta == json.loads((run_dir / "meta.json").read_text())
    assert run.history == json.loads((run_dir / "history.json").read_text())
    assert isinstance(run.spec, RunMeta) and run.spec.dataset.num_test == run.meta["dataset"]["num_test"]


def test_model_names_table_matches_the_registry():
    """meta_schema keeps the names torch-free; a model added to the zoo must be added there too."""
    from trainer.models import list_models

    assert MODEL_NAMES == set(list_models())


def test_unknown_fields_are_kept_and_missing_optional_ones_filled(run_copy):
    meta = json.loads((run_copy / "meta.json").read_text())
    meta["written_by_a_newer_trainer"] = {"x": [1, 2]}
    meta["dataset"]["licence"] = "BSD"
    del meta["dataset"]["spec"]  # runs from before spec existed re-read the dataset by name
    (run_copy / "meta.json").write_text(json.dumps(meta))
    run = load_run(run_copy)
    assert run.meta["written_by_a_newer_trainer"] == {"x": [1, 2]} and run.meta["dataset"]["licence"] == "BSD"
    assert run.meta["dataset"]["spec"] == "digits" == run.spec.dataset.spec


def test_error_names_file_field_and_value_on_one_line(run_copy):
    _edit_meta(run_copy, std=["x"])
    with pytest.raises(RunDirError) as e:
        load_run(run_copy)
    assert str(e.value) == f"{run_copy / 'meta.json'}: std.0: Input should be a valid number (got 'x')"


def test_diverged_history_is_still_a_history(run_copy):
    (run_copy / "history.json").write_text('[{"epoch": 1, "train_loss": NaN, "lr": 0}]')
    assert load_run(run_copy).history[0]["lr"] == 0


def test_symlink_inside_the_run_directory_is_followed(run_copy):
    (run_copy / "blobs").mkdir()
    (run_copy / "predictions.npz").rename(run_copy / "blobs" / "p.npz")
    (run_copy / "predictions.npz").symlink_to(run_copy / "blobs" / "p.npz")
    assert len(load_run(run_copy).predictions["label"]) == 360


def test_arch_kwargs_the_model_does_not_take_are_a_run_error(run_copy):
    _edit_meta(run_copy, arch_kwargs={"bogus": 1})
    run = load_run(run_copy)  # well-formed: only the builder can tell
    with pytest.raises(RunDirError, match="arch_kwargs do not fit 'lenet5'"):
        run.load_model()


def test_opening_and_validating_a_run_imports_no_torch():
    """The schema, the arch check and the safetensors header check all run before torch is loaded."""
    probe = ("import sys; from trainer.rundir import load_run; load_run(sys.argv[1]); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'captum'}))")
    out = subprocess.run([sys.executable, "-c", probe, str(CHECKPOINTS / "digits-demo")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
