"""The faithfulness scoreboard (scoreboard.npz) on a copy of the digits demo: what it stores, that it
is refused for other weights or test sets, that an interrupted job continues, and that the table's
intervals and tests are scipy's on the stored numbers."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy import stats

from tests.precompute_helpers import command_on_copy, demo_copy, refusals, run_in_two_goes
from trainer.rundir import load_run
from xai_dashboard import explain, faithfulness
from xai_dashboard.sanity import stratified_indices
from xai_dashboard.scoreboard import precompute_scoreboard, scoring_order
from xai_dashboard.scoreboard_file import SCOREBOARD, load_scoreboard, table_rows
from xai_dashboard.views.scoreboard_table import grid_rows

N = 6


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A scoreboard of N images, computed in two goes: the first killed after 4 images (2 batches)."""
    run_dir = demo_copy(tmp_path_factory.mktemp("board"), "gradcam.npz", "sanity.json", "scoreboard.npz")
    partial, note, seen = run_in_two_goes(precompute_scoreboard, load_scoreboard, run_dir, 4, images=N, batch_size=2)
    return run_dir, partial, note, [done for done, _total in seen]


def test_interrupted_job_continues_from_its_partial_results(board):
    run_dir, partial, note, seen = board
    assert len(partial["index"]) == 4 and "4 of 6 images" in note
    assert seen == [5, 6]  # only the two images not yet in the file
    data, note = load_scoreboard(run_dir, load_run(run_dir).meta)
    assert note == "" and len(data["index"]) == N
    for key in ("index", "gradcam.deletion", "random_pixel.insertion", "edge.deletion"):
        assert np.array_equal(data[key][:4], partial[key])


def test_fewer_images_truncate_to_a_stratified_prefix(board, tmp_path):
    run_dir, *_ = board
    copy = tmp_path / "digits-demo"
    shutil.copytree(run_dir, copy)
    precompute_scoreboard(copy, images=3, progress=lambda *_: pytest.fail("nothing should be recomputed"))
    data, note = load_scoreboard(copy, load_run(copy).meta)
    assert note == "" and len(data["index"]) == 3
    assert len(set(data["label"].tolist())) == 3  # round-robin: three different classes


def test_scoring_order_is_stratified_in_every_prefix():
    labels = np.repeat(np.arange(4), 25)
    order = scoring_order(labels, 40, seed=0)
    assert len(set(order.tolist())) == 40
    for k in (4, 8, 20, 40):
        assert np.bincount(labels[order[:k]], minlength=4).tolist() == [k // 4] * 4
    assert np.array_equal(scoring_order(labels, 17, seed=0), order[:17])  # fewer images: a prefix
    assert sorted(order.tolist()) == stratified_indices(labels, 40, seed=0).tolist()  # the sanity check's sample


def test_stores_each_methods_aucs_and_baselines_once_per_image(board):
    run_dir, *_ = board
    run = load_run(run_dir)
    data, _ = load_scoreboard(run_dir, run.meta)
    cfg = data["config"]
    assert cfg["baseline_of"]["gradcam"] == "random_layer" and cfg["baseline_of"]["saliency"] == "random_pixel"
    assert cfg["layer_hw"] == [5, 5] and cfg["steps"] == 32
    # the stored numbers are faithfulness.baselines / deletion_insertion of the first image, recomputed here
    from trainer.sources import load_test_split

    images, _labels = load_test_split(run.meta["dataset"], None, run.meta["input_size"])
    i, target = int(data["index"][0]), int(data["target"][0])
    x = explain.to_input(images[i], run.meta)[0]
    model = run.load_model("cpu").eval()
    ref = faithfulness.baselines(model, x, target, layer_hw=(5, 5), bf16=cfg["precision"] == "bf16")
    assert data["random_layer.deletion"][0] == pytest.approx(ref["random"]["deletion_auc"], abs=1e-5)
    assert data["edge.insertion"][0] == pytest.approx(ref["edge"]["insertion_auc"], abs=1e-5)
    assert target == int(run.predictions["logits"][i].argmax())
    assert all(0 <= v <= 1 for k in data if "." in k for v in data[k])


def test_table_is_scipys_t_interval_and_wilcoxon_on_the_stored_numbers(board):
    run_dir, *_ = board
    with np.load(run_dir / SCOREBOARD.name) as z:  # read independently of the module under test
        raw = {k: z[k] for k in z.files}
    baseline_of = json.loads(str(raw["config"]))["baseline_of"]
    data, _ = load_scoreboard(run_dir, load_run(run_dir).meta)
    for row in grid_rows(data):
        m, rnd = row["method"], baseline_of[row["method"]]
        for measure in ("deletion", "insertion"):
            ours, random = raw[f"{m}.{measure}"], raw[f"{rnd}.{measure}"]
            ci = stats.ttest_1samp(ours, 0).confidence_interval(0.95)
            assert (row[measure], row[f"{measure}_lo"], row[f"{measure}_hi"]) == pytest.approx(
                (ours.mean(), ci.low, ci.high))
            rci = stats.ttest_1samp(random, 0).confidence_interval(0.95)
            assert (row[f"random_{measure}_lo"], row[f"random_{measure}_hi"]) == pytest.approx((rci.low, rci.high))
            assert row[f"{measure}_p"] == pytest.approx(stats.wilcoxon(ours, random).pvalue)
            gain = np.median(ours - random) * (-1 if measure == "deletion" else 1)
            assert row[f"{measure}_vs_random"] == ("better" if gain > 0 else "worse" if gain < 0 else "tie")
            assert row[f"{measure}_ci"] == f"[{ci.low:.3f}, {ci.high:.3f}]"


def test_per_class_rows_use_that_class_only(board):
    run_dir, *_ = board
    data, _ = load_scoreboard(run_dir, load_run(run_dir).meta)
    label = int(data["label"][0])
    keep = data["label"] == label
    row = table_rows(data, label)[0]
    assert row["n"] == keep.sum() and row["deletion"] == pytest.approx(data[f"{row['method']}.deletion"][keep].mean())


@pytest.mark.parametrize("field", ["weights_sha256", "dataset"])
def test_refused_when_the_weights_or_the_test_set_change(board, field):
    data, problem, error, words = refusals(board[0], field, load_scoreboard, SCOREBOARD)
    assert data is None and f"computed for {words}" in problem and "precompute scoreboard" in problem
    assert words in error


def test_cli_and_jobs_know_the_kind_and_the_command_prints_the_table(board, tmp_path, capsys):
    from xai_dashboard import cli, jobs

    assert jobs.KINDS["scoreboard"] == "xai_dashboard.scoreboard:precompute_scoreboard"
    assert cli.build_precompute_parser().parse_args(["scoreboard", "RUN"]).images == 1000
    _, status, out = command_on_copy(board[0], tmp_path, capsys, "scoreboard", "--images", "4")
    assert status == 0  # a prefix: nothing recomputed
    assert out[0].split()[:4] == ["method", "n", "deletion", "random_deletion"]
    assert [line.split("  ")[0] for line in out[1:]][:2] == ["Grad-CAM", "Guided Grad-CAM"]
    assert all("  4  " in line for line in out[1:])  # n


def test_one_image_classes_show_no_interval_rather_than_nan(board):
    run_dir, *_ = board
    data, _ = load_scoreboard(run_dir, load_run(run_dir).meta)
    row = grid_rows(data, int(data["label"][0]))[0]  # N = 6 over 10 classes: one image of this class
    assert row["n"] == 1 and row["deletion_ci"] == "" and row["deletion_lo"] is None
    assert row["deletion"] == pytest.approx(data[f"{row['method']}.deletion"][0])
    json.dumps(row, allow_nan=False)  # what the grid receives is plain JSON
