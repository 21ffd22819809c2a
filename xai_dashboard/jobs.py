"""Expensive background jobs (precomputing a run's derived files), shared by every worker.

A job is identified by (kind, run directory). Guarantees, whichever gunicorn worker or
thread asks:

* **one job per (kind, run)**: the child process holds an exclusive ``flock`` on
  ``<jobs>/<key>.lock`` for its whole life; a second request finds it locked and
  gets the running job's status instead of a new process;
* **at most** :data:`MAX_JOBS` **at once** across the machine's workers: slots are lock
  files too, taken under a short global lock;
* **children are always reaped**: each one is waited for by a daemon thread of the
  worker that started it, so no zombie outlives its job;
* **progress** is a small JSON file the child rewrites atomically; the page polls it.

Kinds live in :data:`KINDS` (name -> ``"module:function"``); the function is called in the
child as ``fn(run_dir, data_dir, progress=callback(done, total))`` and returns a path.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

KINDS: dict[str, str] = {"gradcam": "xai_dashboard.precompute:precompute_gradcam",
                         "sanity": "xai_dashboard.sanity:precompute_sanity",
                         "scoreboard": "xai_dashboard.scoreboard:precompute_scoreboard",
                         "embeddings": "xai_dashboard.embeddings:precompute_embeddings",
                         "stress": "xai_dashboard.stress:precompute_stress"}
MAX_JOBS = int(os.environ.get("XAI_MAX_JOBS", "1"))


@dataclass(frozen=True)
class JobStatus:
    state: str            # "queued", "running", "done", "failed" or "busy" (no free slot)
    done: int = 0
    total: int = 0
    message: str = ""


def jobs_dir() -> Path:
    from .cache import cache_dir

    path = cache_dir() / "jobs"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def job_key(kind: str, run_dir: str | os.PathLike) -> str:
    return hashlib.sha256(f"{kind}\0{Path(run_dir).resolve()}".encode()).hexdigest()[:20]


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


def read_status(kind: str, run_dir: str | os.PathLike) -> JobStatus | None:
    """The last status the job wrote, or None when it never ran here."""
    path = jobs_dir() / f"{job_key(kind, run_dir)}.json"
    try:
        return JobStatus(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write_status(path: Path, status: JobStatus) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(status)))
    os.replace(tmp, path)


def start(kind: str, run_dir: str | os.PathLike, data_dir: str | None = None) -> JobStatus:
    """Start job ``kind`` for ``run_dir`` unless it already runs; returns its status now."""
    if kind not in KINDS:
        raise ValueError(f"unknown job {kind!r}; known: {', '.join(KINDS)}")
    folder, key = jobs_dir(), job_key(kind, run_dir)
    with open(folder / "slots.lock", "a") as gate:
        fcntl.flock(gate, fcntl.LOCK_EX)  # held only while choosing a slot and spawning
        job_fd = _try_lock(folder / f"{key}.lock")
        if job_fd is None:
            return read_status(kind, run_dir) or JobStatus("running", message="already running")
        slot_fd = next((fd for i in range(MAX_JOBS) if (fd := _try_lock(folder / f"slot-{i}.lock")) is not None),
                       None)
        if slot_fd is None:
            os.close(job_fd)
            return JobStatus("busy", message=f"{MAX_JOBS} precompute job(s) already running; try again later")
        status_path = folder / f"{key}.json"
        _write_status(status_path, JobStatus("queued"))
        cmd = [sys.executable, "-m", "xai_dashboard.jobs", kind, str(run_dir), str(status_path), data_dir or "",
               f"{job_fd},{slot_fd}"]
        # The child inherits both locked descriptions: they stay held until it exits.
        proc = subprocess.Popen(cmd, pass_fds=(job_fd, slot_fd), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=True)
        os.close(job_fd)
        os.close(slot_fd)
    threading.Thread(target=_reap, args=(proc, status_path), daemon=True, name=f"reap-{kind}").start()
    return JobStatus("queued")


def _reap(proc: subprocess.Popen, status_path: Path) -> None:
    """Wait for the child (no zombie); a child that died without saying so is marked failed."""
    _, err = proc.communicate()
    if proc.returncode != 0:
        try:
            state = json.loads(status_path.read_text()).get("state")
        except (OSError, ValueError):
            state = None
        if state not in ("done", "failed"):
            tail = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            _write_status(status_path, JobStatus("failed", message=tail[0][:300]))


def _run(kind: str, run_dir: str, status_path: str, data_dir: str, lock_fds: str) -> int:
    """The child: run the job, reporting progress at most every 0.2 s."""
    for fd in map(int, lock_fds.split(",")):
        os.set_inheritable(fd, False)  # a process this job starts must not keep its locks after it ends
    import torch

    torch.set_num_threads(1)  # a job must not take every core from the workers serving pages
    module, _, name = KINDS[kind].partition(":")
    fn = getattr(importlib.import_module(module), name)
    path, last = Path(status_path), [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] > 0.2 or done == total:
            last[0] = time.monotonic()
            _write_status(path, JobStatus("running", int(done), int(total)))

    started = time.perf_counter()
    try:
        out = fn(Path(run_dir), data_dir or None, progress=progress)
    except Exception as e:  # reported in the page, in words
        _write_status(path, JobStatus("failed", message=f"{type(e).__name__}: {e}"[:300]))
        return 1
    _write_status(path, JobStatus("done", message=f"wrote {Path(out).name} in {time.perf_counter() - started:.1f} s"))
    return 0


if __name__ == "__main__":
    sys.exit(_run(*sys.argv[1:6]))
