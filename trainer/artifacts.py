"""Derived files in a run directory: declared once, written one way, read one way.

A derived file (``gradcam.npz``, later ``summary.json``) is computed from the run and is
only valid for what it was computed from. Declaring it is one call::

    GRADCAM = declare("gradcam.npz", version=2, kind="npz",
                      binds=("weights", "test_set", "preprocessing", "gradcam_layer"),
                      producer="xai-dashboard precompute gradcam {run}")

    write(run_dir, GRADCAM, meta, {"pred": maps, ...})     # atomic; records version + bindings
    data = read(run_dir, GRADCAM, meta)                     # the same dict, or ArtifactError

* ``kind`` ``"npz"``: ``data`` is a dict of numpy arrays (never pickled); ``"json"``: any
  JSON-serialisable object (stored under ``"data"``).
* ``binds``: names from :data:`BINDINGS`, each a value derived from ``meta.json``. The
  file stores them (a JSON header: ``__artifact__`` in an npz, ``"artifact"`` in JSON);
  :func:`read` refuses a file whose name, format version or any binding differs, with
  an :class:`ArtifactError` (a :class:`~trainer.rundir.RunDirError`) naming the file,
  the reason and the command that rewrites it. A missing file raises
  :class:`ArtifactMissing` (also an ArtifactError), or gives None with ``missing_ok``.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trainer.rundir import RunDirError, atomic_write

HEADER = "__artifact__"


def _preprocessing(meta: dict) -> str:
    fields = [meta[k] for k in ("arch", "arch_kwargs", "input_size", "in_channels", "mean", "std")]
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _train_set(meta: dict) -> str:
    """The training images as meta.json names them (no fingerprint of them is recorded): the source,
    how many and which subset; a file bound to it also records the fingerprint it found."""
    d = meta["dataset"]
    fields = [d.get("spec", d["name"]), d["num_train"], d.get("train_subset")]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


# What a derived file may be bound to: name -> (value from meta.json, words for messages).
BINDINGS: dict[str, tuple[Callable[[dict], str], str]] = {
    "weights": (lambda meta: meta["weights_sha256"], "weights"),
    "test_set": (lambda meta: meta["dataset"]["fingerprint"], "test set"),
    "preprocessing": (_preprocessing, "architecture and preprocessing"),
    "gradcam_layer": (lambda meta: meta["gradcam_layer"], "Grad-CAM layer"),
    "classes": (lambda meta: hashlib.sha256(json.dumps(meta["class_names"]).encode()).hexdigest(), "class names"),
    "train_set": (_train_set, "training set"),
}


class ArtifactError(RunDirError):
    """A derived file that is stale, foreign, of another format or unreadable."""


class ArtifactMissing(ArtifactError):
    """A derived file that has not been computed."""


@dataclass(frozen=True)
class Artifact:
    name: str          # file name inside the run directory
    version: int       # format version: bump when the contents' layout or meaning changes
    kind: str          # "npz" or "json"
    binds: tuple[str, ...]
    producer: str      # command that (re)writes it; "{run}" is replaced by the run directory

    def rerun(self, run_dir) -> str:
        return f"rerun `{self.producer.format(run=run_dir)}`"


ARTIFACTS: dict[str, Artifact] = {}


def declare(name: str, *, version: int, kind: str, binds: tuple[str, ...], producer: str) -> Artifact:
    """Register a derived file; returns the handle :func:`write` and :func:`read` take."""
    if kind not in ("npz", "json"):
        raise ValueError(f"{name}: kind must be 'npz' or 'json', got {kind!r}")
    unknown = set(binds) - set(BINDINGS)
    if unknown:
        raise ValueError(f"{name}: unknown bindings {sorted(unknown)}; known: {sorted(BINDINGS)}")
    artifact = Artifact(name, version, kind, tuple(binds), producer)
    if ARTIFACTS.setdefault(name, artifact) != artifact:  # the same declaration twice (a reload) is harmless
        raise ValueError(f"{name} is already declared differently: {ARTIFACTS[name]}")
    return artifact


def header(artifact: Artifact, meta: dict) -> dict:
    """What a file of ``artifact`` for the run of ``meta`` records about itself."""
    return {"file": artifact.name, "version": artifact.version,
            **{b: BINDINGS[b][0](meta) for b in artifact.binds}}


def write(run_dir: str | Path, artifact: Artifact, meta: dict, data: Any) -> Path:
    """Write ``data`` as ``run_dir/artifact.name`` atomically (temp file + rename), with its header."""
    path = Path(run_dir) / artifact.name
    head = header(artifact, meta)
    if artifact.kind == "npz":
        if HEADER in data:
            raise ValueError(f"{artifact.name}: {HEADER!r} is reserved")
        buf = io.BytesIO()  # uncompressed: maps are read far more often than written
        np.savez(buf, **{HEADER: np.array(json.dumps(head))}, **data)
        atomic_write(path, lambda f: f.write(buf.getvalue()))
    else:
        text = json.dumps({"artifact": head, "data": data}, indent=1)
        atomic_write(path, lambda f: f.write(text), mode="w")
    return path


def read(run_dir: str | Path, artifact: Artifact, meta: dict, *, missing_ok: bool = False) -> Any:
    """The ``data`` given to :func:`write`, if the file on disk is current for ``meta``.

    Raises :class:`ArtifactMissing` (or returns None with ``missing_ok``) when absent, and
    :class:`ArtifactError` naming the file, the reason and the fix when it is not current.
    """
    path = Path(run_dir) / artifact.name
    try:
        st = path.stat()
    except OSError:
        if missing_ok:
            return None
        raise ArtifactMissing(f"{artifact.name}: not computed; {artifact.rerun(run_dir)}") from None
    head, data = _load(str(path), artifact.kind, st.st_mtime_ns, st.st_size)
    problem = _mismatch(artifact, head, meta)
    if problem:
        raise ArtifactError(f"{artifact.name}: {problem}; {artifact.rerun(run_dir)}")
    return data


def _mismatch(artifact: Artifact, head: dict | None, meta: dict) -> str | None:
    if not isinstance(head, dict):
        return "unreadable or written without a header"
    if head.get("file") != artifact.name:
        return f"holds a {head.get('file')!r}, not a {artifact.name!r}"
    if head.get("version") != artifact.version:
        return f"format version {head.get('version')!r}, but this version reads {artifact.version}"
    for name in artifact.binds:
        value, words = BINDINGS[name]
        want, got = value(meta), head.get(name)
        if got != want:
            return f"computed for {words} {_short(got)} but the run has {_short(want)}"
    return None


def _short(value) -> str:
    text = str(value)
    return text[:8] + "…" if len(text) > 12 else text


@functools.lru_cache(maxsize=8)
def _load(path: str, kind: str, mtime_ns: int, size: int) -> tuple[dict | None, Any]:
    """``(header, data)`` of a file, shared between callers (read-only); mtime and size in the key,
    so a rewritten file is re-read and an unchanged one is not."""
    try:
        if kind == "npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            head = arrays.pop(HEADER, None)
            return (json.loads(str(head)) if head is not None else None), arrays
        with open(path) as f:
            obj = json.load(f)
        return obj.get("artifact"), obj.get("data")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError):
        return None, None
