"""Shared by the tests of resumable precompute jobs (stress test, scoreboard): a copy of the digits demo run
without the files a test computes itself, a job run in two goes (the first killed part-way), how its file is
answered for other weights or another test set (refused), and its command run again on a copy."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest

from trainer.artifacts import ArtifactError, read
from trainer.rundir import load_run

DEMO = Path(__file__).resolve().parent.parent / "checkpoints" / "digits-demo"


class Killed(Exception):
    """Raised from a job's progress callback: the job stops there, as if its process had been killed."""


def demo_copy(parent: Path, *without: str) -> Path:
    """A copy of the digits demo run at ``parent/digits-demo``, without the files named in ``without``."""
    run_dir = parent / "digits-demo"
    shutil.copytree(DEMO, run_dir, ignore=shutil.ignore_patterns(*without))
    return run_dir


def run_in_two_goes(job: Callable, load: Callable, run_dir: Path, kill_after: int,
                    **kwargs) -> tuple[dict | None, str, list[tuple[int, int]]]:
    """``job(run_dir, progress=..., **kwargs)`` killed once its progress reports more than ``kill_after``
    done, then run again to the end. Returns what ``load(run_dir, meta)`` read in between (the partial
    file and its note) and every ``(done, total)`` the second go reported."""
    def kill(done, _total):
        if done > kill_after:
            raise Killed

    with pytest.raises(Killed):
        job(run_dir, progress=kill, **kwargs)
    partial, note = load(run_dir, load_run(run_dir).meta)
    seen = []
    job(run_dir, progress=lambda done, total: seen.append((done, total)), **kwargs)
    return partial, note, seen


def _foreign_meta(run_dir: Path, field: str) -> tuple[dict, str]:
    """The run's metadata with other weights (``field="weights_sha256"``) or another test set
    (``field="dataset"``), and the words a refusal names the difference by."""
    meta = json.loads(json.dumps(load_run(run_dir).meta))  # a deep copy
    if field == "dataset":
        meta["dataset"]["fingerprint"] = "0" * 16
    else:
        meta[field] = "f" * 64
    return meta, "test set" if field == "dataset" else "weights"


def refusals(run_dir: Path, field: str, load: Callable, artifact) -> tuple[dict | None, str, str, str]:
    """How the run's stored ``artifact`` is answered for other weights or another test set
    (see :func:`_foreign_meta`): ``(data, problem)`` from the view's reader ``load(run_dir, meta)``, the
    message of the ``ArtifactError`` that ``trainer.artifacts.read`` raises, and the words naming the
    difference."""
    meta, words = _foreign_meta(run_dir, field)
    data, problem = load(run_dir, meta)
    with pytest.raises(ArtifactError) as refused:
        read(run_dir, artifact, meta)
    return data, problem, str(refused.value), words


def command_on_copy(run_dir: Path, tmp_path: Path, capsys, kind: str, *options: str) -> tuple[Path, int, list[str]]:
    """``xai-dashboard precompute KIND COPY OPTIONS...`` on a copy of ``run_dir`` under ``tmp_path``: the copy,
    the command's exit status and the lines it printed."""
    from xai_dashboard import cli

    copy = tmp_path / "digits-demo"
    shutil.copytree(run_dir, copy)
    status = cli.main(["precompute", kind, str(copy), *options])
    return copy, status, capsys.readouterr().out.splitlines()
