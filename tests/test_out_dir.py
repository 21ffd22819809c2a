"""``--out`` never loses a run: refusals change nothing on disk, --overwrite touches only the trainer's files."""
from __future__ import annotations

import hashlib
import json

import pytest

from trainer.cli import main
from trainer.rundir import load_run

QUICK = ["--dataset", "digits", "--model", "lenet5", "--epochs", "1", "--train-subset", "300", "--test-subset", "100"]


def tree_hash(root) -> str:
    """Hash of every path under ``root`` (folders included) and every file's bytes."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main([*QUICK, "--seed", "1", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("my notes")
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "important.txt").write_text("keep")
    return out


def _refused(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xai-train: error: --out")
    return err[0]


def test_existing_run_is_refused_untouched(previous_run, capsys):
    before = tree_hash(previous_run)
    msg = _refused([*QUICK, "--out", str(previous_run)], capsys)
    assert "a previous run" in msg and "--overwrite" in msg and "--resume" in msg
    assert tree_hash(previous_run) == before


def test_folder_with_user_files_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "X"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "important.txt").write_text("keep")
    before = tree_hash(tmp_path)
    msg = _refused([*QUICK, "--out", str(out)], capsys)
    assert "already holds files" in msg
    assert tree_hash(tmp_path) == before


@pytest.mark.parametrize("sub", ["", "inside"])
def test_out_on_a_file_is_refused_before_loading_data(tmp_path, capsys, monkeypatch, sub):
    target = tmp_path / "a-file"
    target.write_text("data")
    monkeypatch.setattr("trainer.train.load_dataset", lambda *a, **k: pytest.fail("data loaded before --out check"))
    before = tree_hash(tmp_path)
    msg = _refused([*QUICK, "--out", str(target / sub) if sub else str(target)], capsys)
    assert "is a file" in msg or "is an existing file" in msg
    assert tree_hash(tmp_path) == before


def test_empty_folder_is_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    assert main([*QUICK, "--out", str(tmp_path / "empty")]) == 0
    assert load_run(tmp_path / "empty").meta["arch"] == "lenet5"


def test_overwrite_replaces_trainer_files_and_keeps_user_files(previous_run):
    old_sha = load_run(previous_run).meta["weights_sha256"]
    assert main([*QUICK, "--seed", "2", "--overwrite", "--out", str(previous_run)]) == 0
    run = load_run(previous_run)
    assert run.meta["weights_sha256"] != old_sha and run.meta["seed"] == 2
    assert (previous_run / "notes.txt").read_text() == "my notes"
    assert (previous_run / "checkpoint" / "important.txt").read_text() == "keep"
    assert not (previous_run / "checkpoint" / "state.json").exists()
    manifest = json.loads((previous_run / "manifest.json").read_text())["files"]
    assert sorted(manifest) == ["history.json", "meta.json", "model.safetensors", "predictions.npz"]


def test_checkpoint_folder_goes_only_when_empty(tmp_path):
    from trainer import checkpoint, outdir

    run = tmp_path / "run"
    for name in checkpoint.FILES:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    outdir.record(run, checkpoint.FILES)
    checkpoint.clear_state(run)
    assert not (run / "checkpoint").exists()
    outdir.record(run, checkpoint.FILES)
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "state.json").write_text("x")
    (run / "checkpoint" / "mine.txt").write_text("user")
    checkpoint.clear_state(run)
    assert [p.name for p in (run / "checkpoint").iterdir()] == ["mine.txt"]


def test_hand_edited_manifest_cannot_delete_outside_the_run(tmp_path):
    from trainer import outdir

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"files": ["../victim.txt"]}))
    outdir.remove_recorded(tmp_path / "run")
    assert victim.read_text() == "precious"
