"""Predictions and Grad-CAM sharded over 2 torchrun/gloo processes equal the single-process files."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from trainer.artifacts import read
from trainer.distributed import map_shards, shard_bounds
from trainer.rundir import load_run
from trainer.runtime import Dist

DEMO = Path(__file__).resolve().parent.parent / "checkpoints" / "digits-demo"
PY = sys.executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 ARGS`` on the CPU (gloo), one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def _two_copies(tmp_path: Path) -> tuple[Path, Path]:
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    for d in (single, sharded):
        shutil.copytree(DEMO, d)
    return single, sharded


def test_shard_bounds_cover_the_range_contiguously():
    for n in (1, 5, 360, 361):
        for world in (1, 2, 3, 8):
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1
    single = map_shards(7, lambda a, b: {"x": np.arange(a, b)}, Dist())
    assert single["x"].tolist() == list(range(7))
    with pytest.raises(ValueError, match="empty"):
        map_shards(0, lambda a, b: {}, Dist())


@pytest.mark.timeout(120)
def test_map_shards_gathers_uneven_and_empty_shards(tmp_path):
    """n = 1 leaves rank 0's shard empty; n = 5 gives shards of 2 and 3; several dtypes and row shapes."""
    script = tmp_path / "shards.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        from trainer.distributed import map_shards, session

        def compute(start, stop):
            i = np.arange(start, stop)
            return {"f16": np.repeat(i[:, None, None], 6, 1).reshape(-1, 2, 3).astype(np.float16),
                    "i64": i * 10, "f32": i[:, None] / 7.0}

        with session("cpu") as (ctx, dev):
            assert dev.type == "cpu" and ctx.world == 2
            for n in (1, 5, 64):
                out = map_shards(n, compute, ctx)
                if not ctx.is_main:
                    assert out is None
                    continue
                want = compute(0, n)
                assert sorted(out) == sorted(want)
                for k in want:
                    assert out[k].dtype == want[k].dtype and np.array_equal(out[k], want[k]), (n, k)
                print("gathered", n)
    """))
    r = _torchrun(str(script))
    assert [line for line in r.stdout.splitlines() if line.startswith("gathered")] == \
        ["gathered 1", "gathered 5", "gathered 64"]


@pytest.mark.timeout(120)
def test_torchrun_predict_equals_single_process(tmp_path):
    from trainer.cli import main

    single, sharded = _two_copies(tmp_path)
    for d in (single, sharded):
        (d / "predictions.npz").unlink()
    assert main(["predict", str(single), "--device", "cpu"]) == 0
    r = _torchrun("-m", "trainer.cli", "predict", str(sharded), "--device", "cpu")
    assert r.stdout.count("wrote ") == 1  # only rank 0 writes
    a, b = load_run(single).predictions, load_run(sharded).predictions  # load_run checks the weights' sha
    assert len(a["index"]) == 360
    for k in ("index", "label"):
        assert np.array_equal(a[k], b[k]), k
    np.testing.assert_allclose(b["logits"], a["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b["embedding"].astype(np.float32), a["embedding"].astype(np.float32), atol=1e-2)
    assert load_run(sharded).meta["test_accuracy"] == load_run(single).meta["test_accuracy"]
    assert sorted(p.name for p in sharded.iterdir()) == sorted(p.name for p in DEMO.iterdir())  # no temp files


@pytest.mark.timeout(120)
def test_torchrun_gradcam_equals_single_process(tmp_path):
    from xai_dashboard.cli import main
    from xai_dashboard.gradcam_file import GRADCAM

    single, sharded = _two_copies(tmp_path)
    for d in (single, sharded):
        (d / GRADCAM.name).unlink(missing_ok=True)
    assert main(["precompute", "gradcam", str(single), "--device", "cpu", "--batch-size", "100"]) == 0
    r = _torchrun("-m", "xai_dashboard.cli", "precompute", "gradcam", str(sharded), "--device", "cpu",
                  "--batch-size", "100")
    assert r.stderr.count("wrote ") == 1  # only rank 0 writes
    meta = load_run(sharded).meta
    a, b = read(single, GRADCAM, meta), read(sharded, GRADCAM, meta)  # header: weights, test set, layer
    assert (a["pred_index"] != a["label"]).any()  # mistakes exist, so the true-class maps were sharded too
    for k in ("pred_index", "label"):
        assert np.array_equal(a[k], b[k]), k
    for k in ("pred", "true"):
        assert b[k].shape == (360, 32, 32) and b[k].dtype == np.float16
        np.testing.assert_allclose(b[k].astype(np.float32), a[k].astype(np.float32), atol=2e-3)
    assert sorted(p.name for p in sharded.iterdir()) == sorted(p.name for p in single.iterdir())


def test_unsharded_precompute_refuses_torchrun(monkeypatch, tmp_path, capsys):
    from xai_dashboard.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["precompute", "sanity", str(tmp_path)]) == 2
    assert "does not run under torchrun" in capsys.readouterr().err
