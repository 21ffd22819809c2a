"""Everyday command-line use: a folder of runs, the no-argument default, a moved image folder,
the help text, and the report at the end of training (issue 14, "Runs and the command line")."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import dash
import numpy as np
import pytest
from PIL import Image

from tests.test_scale import make_folder_run
from xai_dashboard import app as app_module
from xai_dashboard import cli, store as store_module

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "checkpoints" / "digits-demo"


@pytest.fixture
def serve(monkeypatch, capsys):
    """``xai-dashboard ARGS`` up to the point where it would listen: returns its stderr lines."""
    monkeypatch.setattr(dash.Dash, "run", lambda self, **kwargs: None)
    monkeypatch.setattr(app_module, "warm_up", lambda store: None)  # nothing in the background
    monkeypatch.setenv("XAI_IMAGE_ROOT", "")  # restored afterwards, as --image-root sets it

    def run(*args: str) -> list[str]:
        assert cli.main([*args, "--port", "0"]) == 0
        return capsys.readouterr().err.splitlines()
    return run


def opened(lines: list[str]) -> list[str]:
    """The run names of the "N run(s): a, b" line."""
    line = next(x for x in lines if " run(s): " in x)
    return line.split(" run(s): ", 1)[1].split(", ")


def banner(lines: list[str]) -> str:
    return " ".join(x for x in lines if x.startswith("xai-dashboard: note:"))


def test_a_folder_of_runs_opens_every_run_inside(tmp_path, serve):
    runs = tmp_path / "runs"
    (runs / "older").mkdir(parents=True)
    (runs / "linked").symlink_to(DEMO)  # a folder of links to runs is followed
    shutil.copytree(DEMO, runs / "older" / "copied")
    (runs / ".hidden").mkdir()
    shutil.copytree(DEMO, runs / ".hidden" / "ignored")
    lines = serve(str(runs))
    assert sorted(opened(lines)) == ["copied", "linked"]
    assert "meta.json" not in banner(lines)  # was "runs/meta.json: missing"
    # a run directory and a folder of runs side by side, the same run not opened twice
    assert sorted(opened(serve(str(DEMO), str(runs), str(runs / "linked")))) == ["copied", "digits-demo", "linked"]


def test_a_folder_without_runs_is_named(tmp_path, serve):
    (tmp_path / "empty").mkdir()
    lines = serve(str(tmp_path / "empty"))
    assert opened(lines) == ["digits-demo"]  # the demo, with the reason
    assert f"No run directories found in {tmp_path / 'empty'}." in banner(lines)  # not a run with no meta.json


def test_no_argument_opens_checkpoints_and_runs_of_the_working_directory(tmp_path, serve, monkeypatch):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "digits-demo").symlink_to(DEMO)
    monkeypatch.setattr(store_module, "DEFAULT_RUNS_DIR", shipped)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert opened(serve()) == ["digits-demo"]  # neither ./checkpoints nor ./runs exists
    shutil.copytree(DEMO, work / "runs" / "mine")  # where the README's xai-train commands write
    assert opened(serve()) == ["digits-demo", "mine"]
    (work / "checkpoints").mkdir()
    (work / "checkpoints" / "kept").symlink_to(DEMO)
    assert opened(serve()) == ["digits-demo", "kept", "mine"]
    monkeypatch.chdir(shipped.parent)
    (shipped.parent / "checkpoints").symlink_to(shipped)  # ./checkpoints is the shipped folder: opened once
    assert opened(serve()) == ["digits-demo"]


def test_a_moved_image_folder_is_named_and_found_with_image_root(tmp_path, serve, monkeypatch):
    run_dir = make_folder_run(tmp_path, 12)
    old = tmp_path / "data"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    old.rename(elsewhere / "data")
    lines = serve(str(run_dir))
    assert opened(lines) == ["digits-demo"]
    assert f"folder not found: {old}" in banner(lines) and "--image-root DIR" in banner(lines)
    assert "train/" not in banner(lines)  # not a layout complaint
    for where in (elsewhere, elsewhere / "data"):  # the folder holding it, or the folder itself
        assert opened(serve(str(run_dir), "--image-root", str(where))) == ["run"]
    monkeypatch.setenv("XAI_IMAGE_ROOT", str(elsewhere))  # the same through the environment (gunicorn)
    assert opened(serve(str(run_dir))) == ["run"]


def test_training_on_a_missing_folder_says_folder_not_found(tmp_path, capsys):
    from trainer.cli import main

    missing = tmp_path / "no-such-folder"
    rc = main(["--dataset", f"imagefolder:{missing}", "--model", "lenet5", "--epochs", "1",
               "--out", str(tmp_path / "run")])
    assert rc == 2 and capsys.readouterr().err.strip() == f"xai-train: error: folder not found: {missing}"


def test_dashboard_help_has_one_line_per_flag():
    parser = cli.build_parser()
    for action in parser._actions:
        assert action.help and "\n" not in action.help, action.option_strings
    text = " ".join(parser.format_help().split())
    assert "folders of runs" in text and "--image-root DIR" in text


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (value, value, value)).save(path)


@pytest.mark.parametrize("test_split", ["test", "val"])
def test_the_layout_in_the_training_help_is_the_one_read(tmp_path, test_split):
    """Build a folder exactly as `xai-train --help` describes it; the trainer lists it as described."""
    from trainer.cli import train_parser
    from trainer.folders import open_folder

    text = train_parser().format_help()
    described = re.findall(r"PATH/(\w+)/CLASS/", text)
    assert described[:2] == ["train", "test"] and "PATH/val/ is accepted too" in text
    for c, name in enumerate(("ant", "bee")):
        for i in range(3):
            _png(tmp_path / "train" / name / f"{i}.png", 40 * c + i)
        _png(tmp_path / test_split / name / "0.png", 100 + c)
    classes, train, test = open_folder(tmp_path, workers=1)
    assert classes == ("ant", "bee") and len(train) == 6 and test.labels.tolist() == [0, 1]


def test_end_of_training_reports_recall_and_balanced_accuracy(tmp_path, capsys):
    """The printed per-class recall and balanced accuracy equal scikit-learn's on the saved predictions."""
    from sklearn.metrics import balanced_accuracy_score, recall_score

    from trainer.cli import main
    from trainer.rundir import load_run

    rng = np.random.default_rng(0)
    for split, counts in (("train", {"common": 24, "rare": 4}), ("test", {"common": 12, "rare": 3})):
        for name, n in counts.items():
            for i in range(n):
                _png(tmp_path / "data" / split / name / f"{i}.png", int(rng.integers(0, 256)))
    out = tmp_path / "run"
    assert main(["--dataset", f"imagefolder:{tmp_path / 'data'}", "--input-size", "16", "--model", "mlp",
                 "--epochs", "1", "--batch-size", "8", "--workers", "1", "--val-fraction", "0",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    p = load_run(out).predictions
    y, pred = p["label"], p["logits"].argmax(1)
    recall = recall_score(y, pred, average=None, labels=[0, 1], zero_division=0)
    rows = {line.split()[0]: line.split() for line in printed if line.split()[:1] in (["common"], ["rare"])}
    assert float(rows["common"][1]) == pytest.approx(recall[0], abs=1e-4) and rows["common"][2] == "12"
    assert float(rows["rare"][1]) == pytest.approx(recall[1], abs=1e-4) and rows["rare"][2] == "3"
    last = next(line for line in printed if line.startswith("accuracy "))
    got = re.search(r"accuracy ([\d.]+), balanced accuracy ([\d.]+)", last)
    assert got, last  # 12 against 3 test images: imbalanced, so balanced accuracy stands beside accuracy
    assert float(got[1]) == pytest.approx((y == pred).mean(), abs=1e-4)
    assert float(got[2]) == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-4)
