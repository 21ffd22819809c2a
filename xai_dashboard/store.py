"""Loaded runs: validated run directories, their predictions and test images.

A run's test images are a uint8 array for CIFAR-10 and digits (small, shared per
dataset) and, for an image folder, a :class:`~.image_source.FolderTestImages`
that decodes each file when it is shown: opening a folder run reads its
predictions and its recorded test file list, and decodes no image.

A :class:`RunStore` is built once per process (per gunicorn worker) and is
read-only afterwards; per-user state lives in the page. Models are loaded
lazily and each carries a lock, because Captum registers hooks on the shared
module and two requests must not interleave on it.

Opening runs needs numpy only: torch is first imported when a model is, so
the error-analysis views are served before it has loaded.
"""
from __future__ import annotations

import logging
import re
import threading
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainer.rundir import HISTORY, META, PREDICTIONS, WEIGHTS, Run, RunDirError, find_runs, load_run
from trainer.sources import DatasetUnavailable, load_test_split

from .image_source import FolderTestImages, open_folder_split

if TYPE_CHECKING:
    import torch

DEFAULT_RUNS_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
DEMO_RUN = "digits-demo"
log = logging.getLogger(__name__)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass(eq=False)
class LoadedRun:
    """One run with everything the views need.

    ``images`` uint8 ``(N, C, H, W)``: a numpy array, or for an image folder a
    :class:`~.image_source.FolderTestImages` indexed the same way (``images[i]``,
    ``images[indices]``, ``len``, ``shape``) that decodes on demand.
    ``labels``/``preds`` int64 ``(N,)``, ``probs`` float32 ``(N, K)`` softmax of the stored logits.
    """

    run: Run
    images: np.ndarray | FolderTestImages
    labels: np.ndarray
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _model_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _model: torch.nn.Module | None = field(default=None, repr=False)
    _inference: torch.nn.Module | None = field(default=None, repr=False)
    pass_seconds: float | None = field(default=None, repr=False)  # measured by explain.pass_seconds

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

    def inference_model(self) -> torch.nn.Module:
        """A second copy of the network that is never hooked, so predictions need no lock and never
        queue behind an attribution holding ``self.lock`` (concurrent eval-mode forwards are safe)."""
        with self._model_lock:
            if self._inference is None:
                self._inference = self.run.load_model("cpu").requires_grad_(False)
            return self._inference


@dataclass(frozen=True)
class Problem:
    """Runs refused for the same reason: one short sentence (which runs, what is wrong, the fix)
    for the banner, and each run's full reason for the folded details."""

    runs: tuple[str, ...]
    sentence: str
    details: tuple[str, ...]  # the full reason of each run, in the order of ``runs``


@dataclass
class RunStore:
    runs: dict[str, LoadedRun]
    banner: str | None = None      # plain text shown on every page (and printed by the CLI)
    skipped: dict[str, str] = field(default_factory=dict)  # run name -> full reason it was refused
    problems: list[Problem] = field(default_factory=list)  # ``skipped`` grouped by reason
    note: str | None = None        # said before the problems, e.g. that the demo opened instead
    data_dir: str | None = None    # where the test images came from (background jobs load them again)

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
        """Load runs (default: :func:`default_run_dirs`), sharing test images per dataset.

        Each of ``run_dirs`` is a run directory or a folder of runs (:func:`expand_run_dirs`; a folder
        without any is reported as such, :func:`no_runs_reason`). A run that cannot be opened (invalid
        files, dataset missing or different) is skipped with its reason; one bad run never stops the
        others. When nothing loads, the bundled digits demo opens with a banner that says why.
        """
        dirs, empty = expand_run_dirs(run_dirs) if run_dirs else (default_run_dirs(), [])
        runs: dict[str, LoadedRun] = {}
        skipped: dict[str, str] = {}
        sentences: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (what, fix) -> [(run, reason)]
        images: dict[tuple, tuple[np.ndarray | FolderTestImages, np.ndarray] | DatasetUnavailable] = {}
        for d in dirs:
            run = None
            try:
                run = load_run(d)
                x, y = _shared_test_split(run, data_dir, images)
                runs[_unique(run.name, runs)] = LoadedRun(run, x, y)
                continue
            except (RunDirError, DatasetUnavailable) as e:
                reason, problem = str(e), _problem(e, d, run)
            except Exception as e:  # unforeseen: logged with its traceback, but one run must not stop the rest
                log.exception("unexpected error opening %s", d)
                reason, problem = f"{d}: {type(e).__name__}: {e}", _problem(e, d, run)
            name = _unique(d.name, skipped)
            skipped[name] = reason
            sentences.setdefault(problem, []).append((name, reason))
        problems = [Problem(tuple(n for n, _ in group), f"{_who(group)} could not be opened: {what}; {fix}.",
                        tuple(r for _, r in group)) for (what, fix), group in sentences.items()]
        for folder in empty:  # not a run, so not "could not be opened": say what was looked for
            name, reason = _unique(folder.name, skipped), no_runs_reason(folder)
            skipped[name] = reason
            problems.append(Problem((name,), reason, (reason,)))
        note = None
        if not runs:
            demo = DEFAULT_RUNS_DIR / DEMO_RUN
            run = load_run(demo)
            x, y = load_test_split(run.meta["dataset"], None, run.meta["input_size"])
            runs[run.name] = LoadedRun(run, x, y)
            note = "Showing the offline digits demo because no requested run could be opened."
        banner = " ".join(([note] if note else []) + [p.sentence for p in problems]) or None
        return cls(runs=runs, banner=banner, skipped=skipped, problems=problems, note=note, data_dir=data_dir)


def expand_run_dirs(paths) -> tuple[list[Path], list[Path]]:
    """``(run directories, folders without runs)``. Each path stays as given when it is a run directory
    (holds meta.json, or a run's other files: its error then names what is missing) or no folder at all
    (its error names it); a folder of runs (such as ``runs/``) gives every run found under it, and a
    folder with none (empty, or image data) goes to the second list (:func:`no_runs_reason`)."""
    dirs: list[Path] = []
    empty: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir() or any((path / name).exists() for name in (META, WEIGHTS, PREDICTIONS, HISTORY)):
            dirs.append(path)
            continue
        found = find_runs(path)
        dirs += found
        empty += [] if found else [path]
    return list(dict.fromkeys(dirs)), list(dict.fromkeys(empty))


def no_runs_reason(folder: Path) -> str:
    """Why ``folder`` (no run under it) opened nothing; for the image-folder layout, how to train on it."""
    reason = f"No run directories found in {folder}"
    if (folder / "train").is_dir() and any((folder / split).is_dir() for split in ("test", "val")):
        reason += (f": it looks like an image dataset (train/ and test/ class folders); train a model on it with "
                   f"`xai-train --dataset imagefolder:{folder} --out runs/NAME`, then open runs/NAME")
    return reason + "."


def default_run_dirs() -> list[Path]:
    """The runs opened without arguments: the shipped ``checkpoints/`` and, in the working directory,
    ``checkpoints/`` and ``runs/`` (where the README's ``xai-train`` commands write), whichever exist."""
    roots = (DEFAULT_RUNS_DIR, Path("checkpoints"), Path("runs"))
    real = dict.fromkeys(root.resolve() for root in roots if root.is_dir())  # the repository's checkpoints once
    return [d for root in real for d in find_runs(root)]


# How to repair a run file, by the file named at the start of a RunDirError.
_FIXES = {
    META: "correct meta.json or retrain the run",
    HISTORY: "correct or delete history.json",
    WEIGHTS: "restore the weights or retrain the run",
    PREDICTIONS: "recompute them with `xai-train predict RUN_DIR`",
}


def _problem(e: Exception, run_dir: Path, run: Run | None) -> tuple[str, str]:
    """``(what is wrong, the fix)`` in words that do not name the run, so runs refused for the
    same reason share one sentence; the full reason, paths and all, goes into the details."""
    if isinstance(e, DatasetUnavailable) and run is not None:
        dataset = run.meta["dataset"]
        if dataset["spec"] == "cifar10":
            return ("the CIFAR-10 test images they were evaluated on could not be loaded",
                    "start with --data-dir DIR (or set XAI_DATA_DIR) pointing at a folder with "
                    "cifar10_train.npz and cifar10_test.npz")
        if str(e).startswith("folder not found: "):  # the one sentence a user who moved the folder needs
            return (str(e).split(" (nor ")[0].split(". Fix")[0],
                    "if it moved, start with --image-root DIR (or set XAI_IMAGE_ROOT) naming where it is now")
        return (f"the {dataset['name']} test images they were evaluated on could not be loaded",
                f"make {dataset['spec']!r} readable (details below)")
    if isinstance(e, RunDirError):
        text = str(e).removeprefix(f"{run_dir}").lstrip("/\\: ")
        file, _, problem = text.partition(": ")
        if file not in _FIXES:
            return text.split(" (")[0], "check the path"
        # The gist is the first clause ("std.0: Input should be a valid number (got 'x')" -> up to
        # " ("), without digests, which differ from run to run while the problem is the same.
        gist = re.sub(r" [0-9a-f]{12}…", "", problem.split(" (")[0].split("; ")[0])
        fix = "replace the link by the file itself" if "symlink" in gist else _FIXES[file]
        return f"{file} {gist}", fix
    return f"unexpected {type(e).__name__}", "see the details and the server log"


def _who(group: list[tuple[str, str]]) -> str:
    """``a``, ``a and b``, ``a, b and c``, ``a, b, c and 4 more``."""
    names = [n for n, _ in group]
    if len(names) == 1:
        return names[0]
    if len(names) <= 3:
        return ", ".join(names[:-1]) + f" and {names[-1]}"
    return ", ".join(names[:3]) + f" and {len(names) - 3} more"


def _shared_test_split(run: Run, data_dir: str | None, images: dict) -> tuple[np.ndarray, np.ndarray]:
    """The run's test split, read once per (fingerprint, input size, channels); a failure is remembered
    too, so ten runs on a missing dataset do not try (and maybe try to download) it ten times."""
    meta = run.meta
    key = (meta["dataset"]["fingerprint"], meta["input_size"], meta["in_channels"])
    if key not in images:
        try:
            if meta["dataset"].get("spec", "").startswith("imagefolder:"):
                images[key] = open_folder_split(run, data_dir)
            else:
                images[key] = _test_split(meta["dataset"], data_dir, meta["input_size"])
        except DatasetUnavailable as e:
            images[key] = e
    if isinstance(images[key], DatasetUnavailable):
        raise images[key]
    return images[key]


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
