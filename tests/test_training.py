"""Training end to end: run directories, determinism, kill-and-resume, torchrun/gloo, the fast recipe."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from trainer.cli import config_from_args, main
from trainer.config import resolve
from trainer.rundir import load_run
from trainer.train import train

PY = sys.executable


def _cli(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "trainer.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.timeout(180)
def test_one_epoch_cifar_subset_writes_valid_run(cifar_dir, tmp_path):
    t0 = time.perf_counter()
    rc = main(["--recipe", "baseline", "--data-dir", str(cifar_dir), "--train-subset", "2000", "--epochs", "1",
               "--seed", "1", "--out", str(tmp_path / "run")])
    elapsed = time.perf_counter() - t0
    assert rc == 0
    run = load_run(tmp_path / "run")
    m = run.meta
    assert m["arch"] == "simple_cnn" and m["class_names"][3] == "cat"
    assert m["dataset"]["num_test"] == 10_000 and len(run.predictions["logits"]) == 10_000
    assert run.predictions["embedding"].dtype == np.float16
    assert 0.15 < m["test_accuracy"] < 0.8  # learned something in one epoch on 1,800 images
    assert m["provenance"]["versions"]["torch"] == torch.__version__ and m["seed"] == 1
    assert m["provenance"]["command"].startswith("xai-train")
    assert len(run.history) == 1 and {"train_loss", "val_loss", "val_acc", "lr"} <= set(run.history[0])
    assert not (tmp_path / "run" / "checkpoint").exists()
    print(f"1-epoch run: {elapsed:.1f}s")


def test_same_seed_gives_identical_logits(tmp_path):
    cfg = resolve("digits", epochs=2, seed=5, model="simple_cnn")
    a = load_run(train(cfg.replace(out=str(tmp_path / "a"))))
    b = load_run(train(cfg.replace(out=str(tmp_path / "b"))))
    assert np.array_equal(a.predictions["logits"], b.predictions["logits"])
    assert a.meta["weights_sha256"] == b.meta["weights_sha256"]
    c = load_run(train(cfg.replace(seed=6, out=str(tmp_path / "c"))))
    assert not np.array_equal(a.predictions["logits"], c.predictions["logits"])


@pytest.mark.timeout(300)
def test_kill_during_epoch_two_then_resume_matches(cifar_dir, tmp_path):
    args = ["--data-dir", str(cifar_dir), "--model", "simple_cnn", "--train-subset", "3000", "--test-subset", "500",
            "--epochs", "4", "--batch-size", "32", "--lr", "0.02", "--seed", "3", "--schedule", "cosine"]
    killed = tmp_path / "killed"
    proc = _cli([*args, "--out", str(killed)])
    state = killed / "checkpoint" / "state.json"
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # well inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "meta.json").exists(), "the run finished before it could be killed"
    # Every phase in its own process, as a user would run them (same thread count throughout).
    for argv in (["--resume", str(killed)], [*args, "--out", str(tmp_path / "clean")]):
        p = _cli(argv)
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out[-2000:]
    w1, w2 = load_file(killed / "model.safetensors"), load_file(tmp_path / "clean" / "model.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k
    assert load_run(killed).meta["epochs_completed"] == 4


@pytest.mark.timeout(300)
def test_torchrun_two_process_gloo(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "trainer.cli",
         "--recipe", "digits", "--epochs", "2", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=280,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    run = load_run(out)
    assert run.meta["test_accuracy"] > 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]


def test_unknown_option_fails_loudly(capsys):
    with pytest.raises(SystemExit) as e:
        config_from_args(["--recipe", "fast", "--no-such-flag", "1"])
    assert e.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_recipe_flags_override_and_config_is_saved(tmp_path):
    cfg, _ = config_from_args(["--recipe", "digits", "--epochs", "1", "--flip", "random", "--out", str(tmp_path / "r")])
    assert cfg.epochs == 1 and cfg.augment.flip == "random" and cfg.augment.translate == 2
    run = load_run(train(cfg))
    assert run.meta["config"]["augment"]["flip"] == "random" and run.meta["config"]["recipe"] == "digits"


@pytest.mark.parametrize("extra", [
    ["--optimizer", "adamw", "--schedule", "onecycle", "--class-weighting", "--oversample"],
    ["--optimizer", "sgd", "--lr", "0.05", "--schedule", "plateau", "--patience", "2", "--label-smoothing", "0.1"],
    ["--optimizer", "adam", "--schedule", "step", "--step-size", "1", "--cutout", "8", "--jitter", "0.1", "--rotate", "10"],
])
def test_optimisers_schedules_and_imbalance_options(tmp_path, extra):
    cfg, _ = config_from_args(["--recipe", "digits", "--epochs", "3", *extra, "--out", str(tmp_path / "r")])
    run = load_run(train(cfg))
    assert run.meta["test_accuracy"] > 0.3
    assert all(np.isfinite(h["train_loss"]) for h in run.history)


def test_early_stopping_restores_best_weights(tmp_path):
    cfg = resolve("digits", epochs=30, lr=0.05, optimizer="sgd", patience=2, out=str(tmp_path / "r"))
    run = load_run(train(cfg))
    best = run.meta["best_epoch"]
    assert run.meta["epochs_completed"] < 30, "patience should have stopped training early"
    assert min(h["val_loss"] for h in run.history) == run.history[best - 1]["val_loss"]


def test_distillation_kd_and_cosine(tmp_path):
    teacher = train(resolve("digits", model="simple_cnn", epochs=3, out=str(tmp_path / "teacher")))
    cfg = resolve("digits", model="light_cnn", epochs=3, teacher=str(teacher), distill_alpha=0.7,
                  distill_temperature=4.0, distill_cosine=0.5, out=str(tmp_path / "student"))
    run = load_run(train(cfg))
    assert run.meta["config"]["teacher"] == str(teacher) and run.meta["test_accuracy"] > 0.5


def test_repredict_reproduces_stored_predictions(tmp_path):
    out = train(resolve("digits", epochs=1, out=str(tmp_path / "r")))
    before = load_run(out).predictions["logits"].copy()
    (out / "predictions.npz").unlink()
    assert main(["predict", str(out)]) == 0
    np.testing.assert_allclose(load_run(out).predictions["logits"], before, atol=1e-5)


@pytest.mark.timeout(240)
def test_fast_sgd_recipe_short_run_and_whitening(cifar_dir, tmp_path):
    from trainer.data import load_dataset
    from trainer.models import create_model
    from trainer.preprocess import normalize

    out = train(resolve("fast-sgd", data_dir=str(cifar_dir), train_subset=2000, test_subset=1000, epochs=1,
                        out=str(tmp_path / "fast")))
    run = load_run(out)
    assert run.meta["arch"] == "fast" and run.meta["test_accuracy_tta"] is not None
    assert run.meta["config"]["augment"]["flip"] == "alternate"
    ds = load_dataset("cifar10", cifar_dir)
    x = normalize(ds.train_x[:4000], run.meta["mean"], run.meta["std"])
    net = create_model("fast")
    eps = 5e-4
    net.init_whitening(x[:3000], eps=eps)
    with torch.no_grad():
        maps = net.whiten(x[3000:]) - net.whiten.bias.view(1, -1, 1, 1)  # held-out images
    half = maps[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    half = half - half.mean(0)
    cov = half.T @ half / len(half)
    off_diag = cov - torch.diag(cov.diag())
    assert off_diag.abs().max() < 0.05, off_diag.abs().max()
    # eps deliberately damps the few near-degenerate directions (eigenvalue ~ eps); all others are unit.
    w = net.whiten.weight[:12].reshape(12, -1)
    eigvals = 1 / (w.norm(dim=1) ** 2) - eps
    expected = eigvals / (eigvals + eps)
    assert torch.allclose(cov.diag(), expected, rtol=0.12, atol=0), (cov.diag(), expected)  # held-out sampling noise
    assert (cov.diag() > 0.9).sum() >= 10, cov.diag()
    assert torch.equal(net.whiten.weight[12:], -net.whiten.weight[:12])


# ------------------------------------------------------------------ command line


def _one_line_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_abbreviated_flags_are_rejected(capsys):
    err = _one_line_error(["--dataset", "digits", "--epoch", "1"], capsys)
    assert "unrecognized arguments: --epoch" in err


def test_unknown_model_lists_the_zoo(capsys):
    err = _one_line_error(["--model", "nosuch"], capsys)
    assert "invalid choice: 'nosuch'" in err and "resnet18" in err and "lenet5" in err


def test_pretrained_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["--dataset", "digits", "--model", "lenet5", "--pretrained", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lenet5 has no pretrained weights" in err[0] and "resnet50" in err[0]

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert main(["--dataset", "digits", "--model", "mobilenet_v3_small", "--pretrained", "--epochs", "1",
                 "--train-subset", "64", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "drop --pretrained" in err[0] and "network is unreachable" in err[0]
    assert not (tmp_path / "b" / "meta.json").exists()


def test_help_documents_every_flag_and_the_datasets():
    from trainer.cli import train_parser

    parser = train_parser()
    for action in parser._actions:
        assert action.help and "\n" not in action.help, action.option_strings
        if action.choices and action.dest != "model_kwargs":
            assert all(str(c) in action.help for c in action.choices), action.option_strings
    text = parser.format_help()
    assert "imagefolder:PATH" in text and "PATH/train/CLASS/" in text and "PATH/test/CLASS/" in text


def test_explain_subcommand_points_to_the_dashboard(capsys):
    assert main(["explain", "runs/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["xai-train: error: `xai-train explain` has moved: run `xai-dashboard precompute gradcam runs/x`"]


def test_class_report_shows_balanced_accuracy_only_when_imbalanced():
    from trainer.train import class_report

    labels = np.array([0] * 90 + [1] * 10)
    preds = np.zeros(100, dtype=np.int64)  # always "a": 90% accurate, useless for "b"
    text = class_report(labels, preds, ("a", "b"))
    lines = text.splitlines()
    assert lines[1].split() == ["a", "1.0000", "90"] and lines[2].split() == ["b", "0.0000", "10"]
    assert "accuracy 0.9000, balanced accuracy 0.5000" in lines[-1]
    even = class_report(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ("a", "b"))
    assert even.splitlines()[-1] == "accuracy 0.7500"
