"""Loaded runs: validated run directories, their predictions and test images.

A :class:`RunStore` is built once per process (per gunicorn worker) and is
read-only afterwards; per-user state lives in the page. Models are loaded
lazily and each carries a lock, because Captum registers hooks on the shared
module and two requests must not interleave on it.

Opening runs needs numpy only: torch is first imported when a model is, so
the error-analysis views are served before it has loaded.
"""
from __future__ import annotations

import threading
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainer.rundir import Run, RunDirError, find_runs, load_run
from trainer.sources import DatasetUnavailable, load_test_split

if TYPE_CHECKING:
    import torch

DEFAULT_RUNS_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
DEMO_RUN = "digits-demo"


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass(eq=False)
class LoadedRun:
    """One run with everything the views need.

    ``images`` uint8 numpy ``(N, C, H, W)``, ``labels``/``preds`` int64 ``(N,)``,
    ``probs`` float32 ``(N, K)`` softmax of the stored logits.
    """

    run: Run
    images: np.ndarray
    labels: np.ndarray
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _model_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _model: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def meta(self) -> dict:
        return self.run.meta

    @property
    def class_names(self) -> list[str]:
        return self.run.class_names

    @property
    def logits(self) -> np.ndarray:
        return self.run.predictions["logits"]

    @cached_property
    def probs(self) -> np.ndarray:
        return softmax(self.logits)

    @cached_property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(1)

    @property
    def weights_sha256(self) -> str:
        return self.meta["weights_sha256"]

    def model(self) -> torch.nn.Module:
        """The network in eval mode on the CPU, loaded on first use. Hold ``self.lock`` while hooking it."""
        with self._model_lock:
            if self._model is None:
                self._model = self.run.load_model("cpu")
            return self._model


@dataclass
class RunStore:
    runs: dict[str, LoadedRun]
    banner: str | None = None      # shown on every page, e.g. why the demo run was opened instead
    skipped: dict[str, str] = field(default_factory=dict)  # run name -> reason it was refused

    @property
    def names(self) -> list[str]:
        return list(self.runs)

    @property
    def default(self) -> str:
        return self.names[0]

    def get(self, name: str | None) -> LoadedRun:
        if name is None:
            return self.runs[self.default]
        try:
            return self.runs[name]
        except KeyError:
            raise KeyError(f"unknown run {name!r}; loaded runs: {', '.join(self.runs)}") from None

    def comparable(self, name: str) -> list[str]:
        """Other runs evaluated on exactly the same test images."""
        fp = self.get(name).meta["dataset"]["fingerprint"]
        return [n for n, r in self.runs.items() if n != name and r.meta["dataset"]["fingerprint"] == fp]

    @classmethod
    def from_dirs(cls, run_dirs: list[str | Path] | None = None, data_dir: str | None = None) -> "RunStore":
        """Load runs (default: every run under ``checkpoints/``), sharing test images per dataset.

        A run whose dataset cannot be found or whose fingerprint differs is
        skipped with its reason; when nothing loads, the bundled digits demo
        opens with a banner that says why.
        """
        dirs = [Path(d) for d in run_dirs] if run_dirs else find_runs(DEFAULT_RUNS_DIR)
        runs: dict[str, LoadedRun] = {}
        skipped: dict[str, str] = {}
        images: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for d in dirs:
            try:
                run = load_run(d)
                key = run.meta["dataset"]["fingerprint"]
                if key not in images:
                    images[key] = _test_split(run.meta["dataset"], data_dir, run.meta["input_size"])
                x, y = images[key]
                runs[_unique(run.name, runs)] = LoadedRun(run, x, y)
            except (RunDirError, DatasetUnavailable) as e:
                skipped[Path(d).name] = str(e)
        banner = None
        if skipped:
            banner = "Some runs could not be opened: " + "; ".join(f"{n}: {r}" for n, r in skipped.items())
        if not runs:
            demo = DEFAULT_RUNS_DIR / DEMO_RUN
            run = load_run(demo)
            x, y = load_test_split(run.meta["dataset"], None, run.meta["input_size"])
            runs[run.name] = LoadedRun(run, x, y)
            banner = (
                "Showing the offline digits demo because no requested run could be opened. "
                + (banner or "")
                + " To analyse CIFAR-10, start with --data-dir DIR (or set XAI_DATA_DIR) pointing at a folder "
                "with cifar10_train.npz and cifar10_test.npz, or go online once so torchvision can download it."
            )
        return cls(runs=runs, banner=banner, skipped=skipped)


def _test_split(dataset: dict, data_dir: str | None, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_test_split`, with unreadable files (permissions, truncated or foreign npz)
    reported as :class:`DatasetUnavailable` so the run is refused instead of the app dying."""
    try:
        return load_test_split(dataset, data_dir, input_size)
    except DatasetUnavailable:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DatasetUnavailable(
            f"the {dataset['name']} test images could not be read from {data_dir or '$XAI_DATA_DIR'} "
            f"({type(e).__name__}: {e}). Fix: point --data-dir or XAI_DATA_DIR at a readable folder "
            f"with cifar10_train.npz and cifar10_test.npz."
        ) from None


def _unique(name: str, taken: dict) -> str:
    if name not in taken:
        return name
    i = 2
    while f"{name}-{i}" in taken:
        i += 1
    return f"{name}-{i}"
