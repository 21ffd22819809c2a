"""Background precompute jobs (hardening issue #2): one process per (kind, run) whoever asks, at most
``MAX_JOBS`` at once, children always reaped, progress readable by any worker."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import CHECKPOINTS, ROOT
from trainer.artifacts import read
from trainer.rundir import load_run
from xai_dashboard import jobs
from xai_dashboard.gradcam_file import GRADCAM


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    copies = []
    for name in ("a", "b"):
        shutil.copytree(CHECKPOINTS / "digits-demo", tmp_path / name)
        copies.append(tmp_path / name)
    return copies


def _job_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True)
            if "xai_dashboard.jobs" in " ".join(p.cmdline() if p.status() != psutil.STATUS_ZOMBIE else [])
            or p.status() == psutil.STATUS_ZOMBIE]


def _wait(kind, run_dir, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        status = jobs.read_status(kind, run_dir)
        if status is not None and status.state in ("done", "failed"):
            return status
        time.sleep(0.2)
    raise AssertionError(f"job did not finish: {jobs.read_status(kind, run_dir)}")


def test_one_job_per_run_a_cap_and_no_zombies(runs, monkeypatch):
    monkeypatch.setattr(jobs, "MAX_JOBS", 1)
    a, b = runs
    first = jobs.start("gradcam", a)
    again = jobs.start("gradcam", a)          # a second click, another thread or worker
    assert first.state == "queued" and again.state in ("queued", "running")
    other = jobs.start("gradcam", b)           # the only slot is taken
    assert other.state == "busy" and "already running" in other.message
    # another process (a second gunicorn worker) sees the same job instead of starting one
    probe = subprocess.run([sys.executable, "-c", f"from xai_dashboard import jobs; print(jobs.start('gradcam', {str(a)!r}).state)"],
                           capture_output=True, text=True, cwd=ROOT, check=True)
    assert probe.stdout.strip() in ("queued", "running")
    assert len(_job_children()) == 1, [p.cmdline() for p in _job_children()]
    assert len([p for p in psutil.process_iter(["cmdline"]) if "xai_dashboard.jobs" in " ".join(p.info["cmdline"] or [])]) == 1
    done = _wait("gradcam", a)
    assert done.state == "done" and "gradcam.npz" in done.message
    run = load_run(a)
    assert read(a, GRADCAM, run.meta)["pred"].shape[0] == run.meta["dataset"]["num_test"]
    # the child exits after writing "done"; the reaper thread then waits for it: no zombie is left
    deadline = time.time() + 60
    while _job_children() and time.time() < deadline:
        time.sleep(0.2)
    assert _job_children() == []
    deadline = time.time() + 60  # the slot is free again (a leaked lock would keep it busy for good)
    while (state := jobs.start("gradcam", b).state) == "busy" and time.time() < deadline:
        time.sleep(0.5)
    assert state == "queued"
    assert _wait("gradcam", b).state == "done"


def test_a_failing_job_says_why(runs):
    a, _ = runs
    (a / "model.safetensors").write_bytes(b"not weights")
    jobs.start("gradcam", a)
    status = _wait("gradcam", a)
    assert status.state == "failed" and "model.safetensors" in status.message


def test_unknown_kind_is_refused(runs):
    with pytest.raises(ValueError, match="unknown job"):
        jobs.start("nosuch", runs[0])
