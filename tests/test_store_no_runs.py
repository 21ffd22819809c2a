"""A folder given to ``xai-dashboard`` that holds no run: an empty folder, or a folder of images (a data
set, not runs), is reported as "no run directories found", with how to train on an image folder; a run
directory that lost its meta.json still says so."""
from __future__ import annotations

import shutil

from test_scale import make_folder_run

from tests.conftest import CHECKPOINTS
from trainer.rundir import META
from xai_dashboard.store import RunStore, expand_run_dirs


def test_an_empty_folder_is_not_a_run(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert expand_run_dirs([empty]) == ([], [empty])
    store = RunStore.from_dirs([empty])
    assert store.names == ["digits-demo"]  # the demo opens instead, as for any folder that yields nothing
    assert store.banner.endswith(f"No run directories found in {empty}.")
    assert "could not be opened" not in store.banner and "meta.json" not in store.banner
    assert store.skipped == {"empty": f"No run directories found in {empty}."}


def test_an_image_dataset_gets_the_training_command(tmp_path):
    make_folder_run(tmp_path, 6)  # tmp/data/test/CLASS/*.jpg (and the run evaluated on them, elsewhere)
    data = tmp_path / "data"
    shutil.copytree(data / "test", data / "train")
    store = RunStore.from_dirs([data])
    assert store.names == ["digits-demo"]
    sentence = store.problems[0].sentence
    assert sentence.startswith(f"No run directories found in {data}: it looks like an image dataset")
    assert f"xai-train --dataset imagefolder:{data} --out runs/NAME" in sentence


def test_folders_of_runs_and_broken_runs_keep_their_reasons(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(CHECKPOINTS / "digits-demo", runs / "good")
    shutil.copytree(CHECKPOINTS / "digits-demo", tmp_path / "lost-meta")
    (tmp_path / "lost-meta" / META).unlink()
    (tmp_path / "nothing").mkdir()
    store = RunStore.from_dirs([runs, tmp_path / "lost-meta", tmp_path / "nothing"])
    assert store.names == ["good"]
    assert "lost-meta could not be opened: meta.json missing" in store.banner
    assert f"No run directories found in {tmp_path / 'nothing'}." in store.banner
    assert [p.runs for p in store.problems] == [("lost-meta",), ("nothing",)]
