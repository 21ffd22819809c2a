"""A careless training flag is refused at one boundary (TrainConfig) in one line, exit status 2,
before any data is read or any run directory is made; the edge values just inside each range,
and every recipe, still resolve."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from trainer.augment import AugmentConfig
from trainer.cli import config_from_args, main
from trainer.config import RANGES, RECIPES, TrainConfig, resolve
from trainer.rundir import load_run

ROOT = Path(__file__).resolve().parent.parent

# (extra flags, what the one-line error must say). The dataset folder does not exist: a refusal that
# names the flag (not the missing folder) shows the check came before any data was read.
BAD = [
    (["--test-subset", "0"], "--test-subset must be at least 1, got 0"),
    (["--test-subset", "-5"], "--test-subset must be at least 1, got -5"),
    (["--train-subset", "0"], "--train-subset must be at least 1, got 0"),
    (["--train-subset", "-1"], "--train-subset must be at least 1, got -1"),
    (["--input-size", "0"], "--input-size must be in [1, 4096], got 0"),
    (["--input-size", "-32"], "--input-size must be in [1, 4096], got -32"),
    (["--input-size", "5000"], "--input-size must be in [1, 4096], got 5000"),
    (["--input-size", "4"], "--input-size must be greater than 4, the largest of --translate 4 and --cutout 0, got 4"),
    (["--input-size", "2", "--translate", "2"], "--input-size must be greater than 2"),
    (["--input-size", "16", "--cutout", "16"], "--input-size must be greater than 16"),
    (["--translate", "32"], "--translate and --cutout must be smaller than the 32 px images"),
    (["--translate", "-2"], "--translate must be at least 0, got -2"),
    (["--cutout", "-1"], "--cutout must be at least 0, got -1"),
    (["--jitter", "1"], "--jitter must be in [0, 1), got 1.0"),
    (["--rotate", "-10"], "--rotate must be in [0, 180], got -10.0"),
    (["--val-fraction", "1.5"], "--val-fraction must be in [0, 1), got 1.5"),
    (["--val-fraction", "1"], "--val-fraction must be in [0, 1), got 1.0"),
    (["--val-fraction", "-0.1"], "--val-fraction must be in [0, 1), got -0.1"),
    (["--val-fraction", "nan"], "--val-fraction must be in [0, 1), got nan"),
    (["--train-subset", "1", "--val-fraction", "0.9"], "--val-fraction 0.9 of --train-subset 1 leaves no training"),
    (["--epochs", "0"], "--epochs must be greater than 0, got 0.0"),
    (["--epochs", "nan"], "--epochs must be greater than 0, got nan"),
    (["--epochs", "inf"], "--epochs must be greater than 0, got inf"),
    (["--batch-size", "-3"], "--batch-size must be at least 1, got -3"),
    (["--workers", "-1"], "--workers must be at least 0, got -1"),
    (["--lr", "0"], "--lr must be greater than 0, got 0.0"),
    (["--lr", "-0.1"], "--lr must be greater than 0, got -0.1"),
    (["--lr", "nan"], "--lr must be greater than 0, got nan"),
    (["--momentum", "1"], "--momentum must be in [0, 1), got 1.0"),
    (["--momentum", "-0.5"], "--momentum must be in [0, 1), got -0.5"),
    (["--weight-decay", "-0.0001"], "--weight-decay must be at least 0, got -0.0001"),
    (["--bias-lr-scale", "0"], "--bias-lr-scale must be greater than 0, got 0.0"),
    (["--muon-lr", "-1"], "--muon-lr must be greater than 0, got -1.0"),
    (["--muon-momentum", "1.2"], "--muon-momentum must be in [0, 1), got 1.2"),
    (["--muon-ns-steps", "0"], "--muon-ns-steps must be at least 1, got 0"),
    (["--warmup-fraction", "1.5"], "--warmup-fraction must be in [0, 1], got 1.5"),
    (["--lr-end", "-0.1"], "--lr-end must be in [0, 1], got -0.1"),
    (["--step-size", "0"], "--step-size must be at least 1, got 0"),
    (["--gamma", "0"], "--gamma must be in (0, 1), got 0.0"),
    (["--gamma", "1", "--schedule", "plateau"], "--gamma must be in (0, 1), got 1.0"),
    (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1), got 1.0"),
    (["--patience", "-1"], "--patience must be at least 0, got -1"),
    (["--patience", "2", "--val-fraction", "0"], "--patience (early stopping) needs a validation split"),
    (["--schedule", "plateau", "--val-fraction", "0"], "--schedule plateau needs a validation split"),
    (["--distill-temperature", "0"], "--distill-temperature must be greater than 0, got 0.0"),
    (["--distill-alpha", "2"], "--distill-alpha must be in [0, 1], got 2.0"),
    (["--distill-cosine", "-1"], "--distill-cosine must be at least 0, got -1.0"),
    (["--lookahead-every", "-1"], "--lookahead-every must be at least 0, got -1"),
    (["--whiten-bias-epochs", "-1"], "--whiten-bias-epochs must be at least 0, got -1.0"),
    (["--augmix-weight", "nan"], "--augmix-weight must be at least 0, got nan"),
    (["--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
    (["--seed", str(2**40)], f"--seed must be in [0, 4294967295], got {2**40}"),
    (["--dataset", "cifar10", "--input-size", "64"], "--input-size applies to digits and imagefolder:PATH only"),
    (["--dataset", "mnist"], "--dataset must be cifar10, digits or imagefolder:PATH, got 'mnist'"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_value_is_refused_in_one_line_before_any_data(extra, message, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--dataset", f"imagefolder:{tmp_path / 'no-such-folder'}", "--model", "simple_cnn", "--epochs", "1",
            "--workers", "1", *extra, "--out", str(out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xai-train: error: "), captured.err
    assert message in lines[0], lines[0]
    assert captured.out == "" and not out.exists()


def test_the_probe_command_is_one_line_in_a_fresh_process(tmp_path):
    """The probe's command exactly (a real image folder): no warning, no traceback, no run directory."""
    data = tmp_path / "data" / "train" / "cat"
    data.mkdir(parents=True)
    out = tmp_path / "x8"
    argv = ["--dataset", f"imagefolder:{tmp_path / 'data'}", "--model", "simple_cnn", "--epochs", "1",
            "--test-subset", "0", "--out", str(out)]
    done = subprocess.run([sys.executable, "-m", "trainer.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["xai-train: error: --test-subset must be at least 1, got 0"], done.stderr
    assert not out.exists()


GOOD = [
    (["--test-subset", "1"], "test_subset", 1),
    (["--train-subset", "1"], "train_subset", 1),
    (["--input-size", "5"], "input_size", 5),  # just above the default --translate 4
    (["--input-size", "9", "--cutout", "8"], "input_size", 9),
    (["--input-size", "1", "--translate", "0"], "input_size", 1),
    (["--input-size", "4096"], "input_size", 4096),
    (["--translate", "31"], "translate", 31),
    (["--val-fraction", "0"], "val_fraction", 0.0),
    (["--val-fraction", "0.99"], "val_fraction", 0.99),
    (["--epochs", "0.01"], "epochs", 0.01),
    (["--momentum", "0"], "momentum", 0.0),
    (["--gamma", "0.999"], "gamma", 0.999),
    (["--label-smoothing", "0.99"], "label_smoothing", 0.99),
    (["--warmup-fraction", "1"], "warmup_fraction", 1.0),
    (["--workers", "0"], "workers", 0),
    (["--seed", "4294967295"], "seed", 4294967295),
    (["--rotate", "180"], "rotate", 180.0),
]


@pytest.mark.parametrize("extra,name,value", GOOD, ids=[" ".join(a) for a, _, _ in GOOD])
def test_edge_values_inside_the_ranges_are_accepted(extra, name, value):
    cfg, _ = config_from_args(["--dataset", "imagefolder:/nowhere", *extra])
    assert getattr(cfg.augment if name in ("translate", "cutout", "rotate") else cfg, name) == value


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_still_resolves_and_round_trips(recipe):
    cfg = resolve(recipe)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    cli_cfg, _ = config_from_args(["--recipe", recipe])
    assert cli_cfg == cfg


def test_a_saved_config_with_a_bad_value_is_refused_on_resume():
    bad = {**resolve("digits").to_dict(), "test_subset": 0}
    with pytest.raises(ValueError, match="--test-subset must be at least 1, got 0"):
        TrainConfig.from_dict(bad)


def test_every_numeric_field_has_a_range():
    """A new int/float field of TrainConfig or AugmentConfig needs its entry in RANGES."""
    numeric = set()
    for cls in (TrainConfig, AugmentConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            types = set(typing.get_args(hints[f.name])) or {hints[f.name]}
            if types & {int, float}:
                numeric.add(f.name)
    assert numeric == set(RANGES)


def test_the_smallest_accepted_input_size_trains_and_writes_a_run_the_dashboard_opens(tmp_path):
    """--input-size just above the default --translate 4 and --test-subset 1: the run trains (the padding
    fits) and its meta.json passes the dashboard's schema."""
    out = tmp_path / "run"
    assert main(["--dataset", "digits", "--model", "simple_cnn", "--input-size", "5", "--epochs", "0.05",
                 "--batch-size", "64", "--test-subset", "1", "--workers", "0", "--device", "cpu",
                 "--out", str(out)]) == 0
    run = load_run(out)
    assert run.meta["input_size"] == 5 and run.meta["config"]["input_size"] == 5
    assert run.meta["dataset"]["num_test"] == 1 and run.meta["test_accuracy"] in (0.0, 1.0)
