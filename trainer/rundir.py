"""The run directory: the one contract between the trainer and the dashboard.

A run directory holds::

    model.safetensors   weights only (nothing is ever unpickled)
    meta.json           architecture, classes, preprocessing, dataset fingerprint,
                        provenance (seed, command, versions, commit), accuracy, sha256
    history.json        one record per epoch
    predictions.npz     index, label, logits (N, C) float32, embedding (N, D) float16,
                        weights_sha256 (binds the predictions to the weights)

and, derived by the dashboard and optional (each names what it was computed
from and is ignored once that changes)::

    summary.json        metrics, curves and confusion matrix (xai_dashboard.summaries)
    gradcam.npz         Grad-CAM of the whole test set (xai_dashboard.gradcam_file)

Every file is written atomically (temp file + ``os.replace``) so a killed
process never leaves a half-written run. :func:`load_run` validates all of it
(``meta.json`` and ``history.json`` against :mod:`trainer.meta_schema`, the
safetensors header, the predictions' shapes and dtypes, where symlinks lead) and
raises :class:`RunDirError` naming the file, the field and the problem on one line.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import ValidationError

from trainer.meta_schema import SCHEMA_VERSION  # noqa: F401 -- re-exported: the writer stamps it
from trainer.meta_schema import HISTORY_RECORDS, RunMeta, describe

WEIGHTS, META, HISTORY, PREDICTIONS = (
    "model.safetensors", "meta.json", "history.json", "predictions.npz",
)
MAX_JSON_BYTES = 64 << 20  # far above any real meta/history file; bounds what a damaged one costs
PREDICTION_KEYS = ("index", "label", "logits", "embedding", "weights_sha256")


_UMASK = os.umask(0)
os.umask(_UMASK)


class RunDirError(ValueError):
    """A run directory is missing, incomplete or inconsistent."""


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; a run dir is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
    atomic_write(path, lambda f: f.write(text), mode="w")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, (Path, tuple)):
        return str(o) if isinstance(o, Path) else list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_weights(run_dir: Path, state_dict: dict) -> str:
    """Save a state dict as safetensors; returns the file's sha256."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    blob = save(tensors)
    atomic_write(Path(run_dir) / WEIGHTS, lambda f: f.write(blob))
    return hashlib.sha256(blob).hexdigest()


def write_predictions(run_dir: Path, *, index, label, logits, embedding, weights_sha256: str) -> None:
    """``logits`` (N, C) float32 and ``embedding`` (N, D) float16, for every test image."""
    arrays = dict(
        index=np.asarray(index, dtype=np.int64),
        label=np.asarray(label, dtype=np.int64),
        logits=np.asarray(logits, dtype=np.float32),
        embedding=np.asarray(embedding, dtype=np.float16),
        weights_sha256=np.array(weights_sha256),
    )
    atomic_write(Path(run_dir) / PREDICTIONS, lambda f: np.savez_compressed(f, **arrays))


@dataclass
class Run:
    """A validated run directory. ``predictions`` is loaded lazily (it is the big part).

    ``meta`` is the validated ``meta.json`` as a plain dict (what the views index);
    ``spec`` is the same as the typed :class:`~trainer.meta_schema.RunMeta`.
    """

    path: Path
    meta: dict
    spec: RunMeta | None = field(default=None, repr=False)
    history: list[dict] = field(default_factory=list)
    _predictions: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def predictions(self) -> dict[str, np.ndarray]:
        if self._predictions is None:
            self._predictions = load_predictions(self.path, self.meta)
        return self._predictions

    def load_model(self, device: str = "cpu"):
        """Rebuild the network from the registry and load the verified weights (eval mode)."""
        from safetensors.torch import load_file

        from trainer.models import create_model

        verify_weights(self.path, self.meta)
        try:
            model = create_model(
                self.meta["arch"], num_classes=self.meta["num_classes"],
                in_channels=self.meta["in_channels"], **self.meta["arch_kwargs"],
            )
        except (TypeError, ValueError) as e:  # arch_kwargs the builder does not take, or bad values
            raise RunDirError(f"{self.path / META}: arch_kwargs do not fit {self.meta['arch']!r}: {e}") from None
        try:
            model.load_state_dict(load_file(self.path / WEIGHTS, device=device))
        except RuntimeError as e:
            raise RunDirError(f"{self.path / WEIGHTS}: weights do not fit {self.meta['arch']!r}: {e}") from None
        return model.to(device).eval()


def _read_json(path: Path) -> Any:
    """Parse a JSON file, refusing what is not UTF-8, not JSON, absurdly large or absurdly nested."""
    if not path.is_file():
        raise RunDirError(f"{path}: missing")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except OSError as e:
        raise RunDirError(f"{path}: unreadable ({e.strerror or e})") from None
    if len(raw) > MAX_JSON_BYTES:
        raise RunDirError(f"{path}: larger than {MAX_JSON_BYTES >> 20} MiB, not a run file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RunDirError(f"{path}: not valid JSON (not UTF-8 text: byte {e.start} is {raw[e.start]:#04x})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}: not valid JSON ({e.msg}: line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # ints over 4300 digits; nesting deeper than the parser's stack
        raise RunDirError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None


def validate_meta(meta: Any, where: Path) -> RunMeta:
    """Check parsed ``meta.json`` against :class:`~trainer.meta_schema.RunMeta`; the error names the field."""
    if not isinstance(meta, dict):
        raise RunDirError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    try:
        return RunMeta.model_validate(meta)
    except ValidationError as e:
        raise RunDirError(f"{where}: {describe(e)}") from None


def _load_history(path: Path) -> list[dict]:
    """``history.json`` as written (it is optional), after checking each record's numeric fields."""
    if not path.exists():
        return []
    history = _read_json(path)
    if not isinstance(history, list):
        raise RunDirError(f"{path}: expected a list of epoch records, got {type(history).__name__}")
    try:
        records = HISTORY_RECORDS.validate_python(history)
    except ValidationError as e:
        raise RunDirError(f"{path}: {describe(e)}") from None
    return [r.model_dump(exclude_unset=True) for r in records]


def _check_links(run_dir: Path) -> None:
    """Refuse run files that are dangling symlinks or lead outside the run directory: the dashboard
    serves what it reads, so a link must not make it read (or write beside) someone else's file."""
    root = run_dir.resolve()
    for name in (META, HISTORY, WEIGHTS, PREDICTIONS):
        path = run_dir / name
        if not path.is_symlink():
            continue
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
            raise RunDirError(f"{path}: dangling symlink (-> {os.readlink(path)})") from None
        if not target.is_relative_to(root):
            raise RunDirError(f"{path}: symlink to {target}, outside the run directory")


def check_weights_header(path: Path) -> None:
    """Parse the safetensors header (numpy framework: torch stays unimported) so a garbled
    file is refused when the run is opened, not on the first model request."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            names = list(f.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise RunDirError(f"{path}: not a valid safetensors file ({' '.join(str(e).split())})") from None
    if not names:
        raise RunDirError(f"{path}: holds no tensors")


def verify_weights(run_dir: Path, meta: dict) -> None:
    """The weights file exists, parses as safetensors and has the sha256 recorded in ``meta.json``."""
    path = Path(run_dir) / WEIGHTS
    if not path.is_file():
        raise RunDirError(f"{path}: missing")
    check_weights_header(path)
    digest = sha256_file(path)
    if digest != meta["weights_sha256"]:
        raise RunDirError(f"{path}: sha256 {digest[:12]}… does not match meta.json ({meta['weights_sha256'][:12]}…)")


def load_predictions(run_dir: Path, meta: dict) -> dict[str, np.ndarray]:
    """``predictions.npz``, checked against ``meta.json``: count, classes, dtypes, weights."""
    path = Path(run_dir) / PREDICTIONS
    if not path.is_file():
        raise RunDirError(f"{path}: missing (run `xai-train predict {run_dir}`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in PREDICTION_KEYS if k not in z.files]
            if missing:
                raise RunDirError(f"{path}: missing arrays {missing}")
            p = {k: z[k] for k in PREDICTION_KEYS}
    except RunDirError:
        raise
    except (OSError, ValueError, EOFError, MemoryError, zipfile.BadZipFile) as e:
        raise RunDirError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    _check_prediction_arrays(path, p, meta)
    if str(p["weights_sha256"]) != meta["weights_sha256"]:
        raise RunDirError(f"{path}: computed with other weights; run `xai-train predict {run_dir}`")
    p["weights_sha256"] = str(p["weights_sha256"])
    return p


def _check_prediction_arrays(path: Path, p: dict[str, np.ndarray], meta: dict) -> None:
    """Shapes and dtypes the views index with: one row per test image, one logit per class."""
    n, c = meta["dataset"]["num_test"], meta["num_classes"]
    kinds = {"index": "iu", "label": "iu", "logits": "f", "embedding": "fiu", "weights_sha256": "U"}
    wrong = [k for k, kind in kinds.items() if p[k].dtype.kind not in kind]
    if wrong:
        raise RunDirError(f"{path}: wrong dtype for {', '.join(f'{k} ({p[k].dtype})' for k in wrong)}")
    if p["index"].ndim != 1 or len(p["index"]) != n:
        raise RunDirError(f"{path}: {p['index'].size} predictions for a test set of {n}")
    if (p["logits"].shape != (n, c) or p["label"].shape != (n,) or p["embedding"].ndim != 2
            or len(p["embedding"]) != n or p["weights_sha256"].ndim != 0):
        raise RunDirError(f"{path}: array shapes disagree (logits {p['logits'].shape}, {n} images, {c} classes)")
    if n and (p["label"].min() < 0 or p["label"].max() >= c):
        raise RunDirError(f"{path}: labels outside 0..{c - 1}")
    if not np.isfinite(p["logits"]).all():
        raise RunDirError(f"{path}: logits contain NaN or inf")


def load_run(run_dir: str | Path, *, check_weights: bool = True, check_predictions: bool = True) -> Run:
    """Read and validate a run directory; raises :class:`RunDirError` on any problem."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"{path}: not a directory")
    _check_links(path)
    spec = validate_meta(_read_json(path / META), path / META)
    # Dumped back without the unset defaults, so a valid file reads exactly as written.
    meta = spec.model_dump(exclude_unset=True)
    history = _load_history(path / HISTORY)
    if check_weights:
        verify_weights(path, meta)
    run = Run(path=path, meta=meta, spec=spec, history=history)
    if check_predictions:
        run._predictions = load_predictions(path, meta)
    return run


def find_runs(root: str | Path) -> list[Path]:
    """Every directory under ``root`` (itself included) that holds a meta.json.

    Symlinked folders are followed (a folder of links to runs is a common way to group them),
    each real folder once; hidden folders and a run's own sub-folders are not searched.
    """
    found, seen = [], set()
    for folder, subdirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen or META in files:
            if real not in seen:
                found.append(Path(folder))
            subdirs[:] = []
        else:
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        seen.add(real)
    return sorted(found)


TEST_FILES = "test_files.json"


def write_test_files(run_dir: Path, records: list[dict]) -> None:
    """Record an image folder's test split: ``[{"path", "label", "size"}]`` in evaluation order,
    paths relative to the folder; the dataset fingerprint is a hash of exactly this list."""
    write_json(Path(run_dir) / TEST_FILES, {"files": records})


def load_test_files(run_dir: Path) -> list[dict] | None:
    """The recorded test file list, or None for a run not trained on an image folder."""
    path = Path(run_dir) / TEST_FILES
    if not path.exists():
        return None
    try:
        files = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path}: unreadable ({e})") from None
    if not isinstance(files, dict) or not isinstance(files.get("files"), list):
        raise RunDirError(f"{path}: expected an object with a list of files")
    return files["files"]
