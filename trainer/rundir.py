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
and raises :class:`RunDirError` naming the file and the problem.
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

SCHEMA_VERSION = 1
WEIGHTS, META, HISTORY, PREDICTIONS = (
    "model.safetensors", "meta.json", "history.json", "predictions.npz",
)
REQUIRED_META = {
    "schema_version": int, "arch": str, "arch_kwargs": dict, "num_classes": int,
    "in_channels": int, "class_names": list, "input_size": int, "mean": list, "std": list,
    "dataset": dict, "gradcam_layer": str, "layers": list, "seed": int,
    "weights_sha256": str,
}
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
    """A validated run directory. ``predictions`` is loaded lazily (it is the big part)."""

    path: Path
    meta: dict
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
        model = create_model(
            self.meta["arch"], num_classes=self.meta["num_classes"],
            in_channels=self.meta["in_channels"], **self.meta["arch_kwargs"],
        )
        try:
            model.load_state_dict(load_file(self.path / WEIGHTS, device=device))
        except RuntimeError as e:
            raise RunDirError(f"{self.path / WEIGHTS}: weights do not fit {self.meta['arch']!r}: {e}") from None
        return model.to(device).eval()


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise RunDirError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: not valid JSON ({e})") from None


def validate_meta(meta: Any, where: Path) -> dict:
    if not isinstance(meta, dict):
        raise RunDirError(f"{where}: expected a JSON object")
    for key, typ in REQUIRED_META.items():
        if key not in meta:
            raise RunDirError(f"{where}: missing field {key!r}")
        if not isinstance(meta[key], typ) or (typ is int and isinstance(meta[key], bool)):
            raise RunDirError(f"{where}: field {key!r} should be {typ.__name__}, got {type(meta[key]).__name__}")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise RunDirError(f"{where}: schema_version {meta['schema_version']} is not supported (expected {SCHEMA_VERSION})")
    n = meta["num_classes"]
    if len(meta["class_names"]) != n:
        raise RunDirError(f"{where}: {len(meta['class_names'])} class_names for num_classes={n}")
    c = meta["in_channels"]
    if len(meta["mean"]) != c or len(meta["std"]) != c or any(s <= 0 for s in meta["std"]):
        raise RunDirError(f"{where}: mean/std must have in_channels={c} entries and std > 0")
    for key in ("name", "fingerprint", "num_test"):
        if key not in meta["dataset"]:
            raise RunDirError(f"{where}: dataset.{key} missing")
    return meta


def verify_weights(run_dir: Path, meta: dict) -> None:
    path = Path(run_dir) / WEIGHTS
    if not path.is_file():
        raise RunDirError(f"{path}: missing")
    digest = sha256_file(path)
    if digest != meta["weights_sha256"]:
        raise RunDirError(f"{path}: sha256 {digest[:12]}… does not match meta.json ({meta['weights_sha256'][:12]}…)")


def load_predictions(run_dir: Path, meta: dict) -> dict[str, np.ndarray]:
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
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise RunDirError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    n, c = len(p["index"]), meta["num_classes"]
    if n != meta["dataset"]["num_test"]:
        raise RunDirError(f"{path}: {n} predictions for a test set of {meta['dataset']['num_test']}")
    if p["logits"].shape != (n, c) or p["label"].shape != (n,) or len(p["embedding"]) != n:
        raise RunDirError(f"{path}: array shapes disagree (logits {p['logits'].shape}, {n} images, {c} classes)")
    if str(p["weights_sha256"]) != meta["weights_sha256"]:
        raise RunDirError(f"{path}: computed with other weights; run `xai-train predict {run_dir}`")
    if not np.isfinite(p["logits"]).all():
        raise RunDirError(f"{path}: logits contain NaN or inf")
    p["weights_sha256"] = str(p["weights_sha256"])
    return p


def load_run(run_dir: str | Path, *, check_weights: bool = True, check_predictions: bool = True) -> Run:
    """Read and validate a run directory; raises :class:`RunDirError` on any problem."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"{path}: not a directory")
    meta = validate_meta(_read_json(path / META), path / META)
    history = _read_json(path / HISTORY) if (path / HISTORY).exists() else []
    if not isinstance(history, list):
        raise RunDirError(f"{path / HISTORY}: expected a list of epoch records")
    if check_weights:
        verify_weights(path, meta)
    run = Run(path=path, meta=meta, history=history)
    if check_predictions:
        run._predictions = load_predictions(path, meta)
    return run


def find_runs(root: str | Path) -> list[Path]:
    """Every directory under ``root`` (itself included) that holds a meta.json."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob(META) if not any(part.startswith(".") for part in p.parts))
