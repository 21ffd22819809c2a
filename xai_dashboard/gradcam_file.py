"""``RUN_DIR/gradcam.npz``: the whole test set's Grad-CAM stored beside the weights, and its reader.

``RUN_DIR/gradcam.npz`` (written atomically, uncompressed so it loads fast)::

    pred            float16 (N, H, W)  map for the predicted class
    true            float16 (N, H, W)  map for the true class (= pred where the prediction is right)
    pred_index      int64   (N,)       the predicted classes the maps were made for
    label           int64   (N,)
    layer           str                the layer (meta.json's gradcam_layer)
    weights_sha256  str                binds the maps to the weights: new weights -> file ignored
    version         int                FORMAT_VERSION: a file of another format is ignored

:mod:`.precompute` writes it (torch); reading needs only numpy, so the API and
the views check for it without loading a model.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

GRADCAM_FILE = "gradcam.npz"
FORMAT_VERSION = 1


@functools.lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int, size: int) -> dict | None:
    # mtime and size in the key: a rewritten file is re-read, an unchanged one is not.
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):
        return None


def load_precomputed(run) -> dict | None:
    """The arrays of ``gradcam.npz`` for LoadedRun ``run``, or None when absent, stale or malformed."""
    path = Path(run.run.path) / GRADCAM_FILE
    try:
        st = path.stat()
    except OSError:
        return None
    data = _read(str(path), st.st_mtime_ns, st.st_size)
    n, shape = len(run.labels), tuple(run.images.shape[2:])
    if (data is None or data.get("version") is None or int(data["version"]) != FORMAT_VERSION
            or str(data.get("weights_sha256")) != run.weights_sha256
            or str(data.get("layer")) != run.meta["gradcam_layer"]
            or any(data.get(k) is None or data[k].shape != (n, *shape) for k in ("pred", "true"))):
        return None
    return data


def precomputed_map(run, index: int, target: int) -> np.ndarray | None:
    """Stored default-layer Grad-CAM float32 ``(H, W)`` of test image ``index`` for class ``target``, if any."""
    data = load_precomputed(run)
    if data is None:
        return None
    if target == int(data["pred_index"][index]):
        return data["pred"][index].astype(np.float32)
    if target == int(data["label"][index]):
        return data["true"][index].astype(np.float32)
    return None
