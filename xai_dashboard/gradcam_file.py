"""``RUN_DIR/gradcam.npz``: the whole test set's Grad-CAM beside the weights (a :mod:`trainer.artifacts` file).

Arrays (uncompressed, so they load fast)::

    pred        float16 (N, H, W)  map for the predicted class
    true        float16 (N, H, W)  map for the true class (= pred where the prediction is right)
    pred_index  int64   (N,)       the predicted classes the maps were made for
    label       int64   (N,)

bound to the weights, the test set, the architecture and preprocessing, and the
Grad-CAM layer: a file computed for anything else is refused. :mod:`.precompute`
writes it (torch); reading needs only numpy, so the API and the views check for it
without loading a model.
"""
from __future__ import annotations

import logging

import numpy as np

from trainer.artifacts import ArtifactError, declare, read

# 2: Grad-CAM's ReLU at the layer's resolution (Selvaraju et al., Eq. 2); header from trainer.artifacts.
GRADCAM = declare("gradcam.npz", version=2, kind="npz",
                  binds=("weights", "test_set", "preprocessing", "gradcam_layer"),
                  producer="xai-dashboard precompute gradcam {run}")
GRADCAM_FILE = GRADCAM.name
log = logging.getLogger(__name__)


def precomputed_problem(run) -> str | None:
    """Why LoadedRun ``run``'s gradcam.npz cannot be used (stale, foreign, malformed), or None when it
    can or is simply absent: the message to show next to the "precompute" action."""
    try:
        data = read(run.run.path, GRADCAM, run.meta, missing_ok=True)
    except ArtifactError as e:
        return str(e)
    n, shape = len(run.labels), tuple(run.images.shape[2:])
    if data is not None and any(data.get(k) is None or data[k].shape != (n, *shape) for k in ("pred", "true")):
        return f"{GRADCAM_FILE}: maps do not cover the {n} test images of {shape}; {GRADCAM.rerun(run.run.path)}"
    return None


def load_precomputed(run) -> dict | None:
    """The arrays of gradcam.npz for LoadedRun ``run``, or None when absent or unusable (the reason is logged;
    :func:`precomputed_problem` returns it)."""
    problem = precomputed_problem(run)
    if problem:
        log.warning("%s", problem)
        return None
    return read(run.run.path, GRADCAM, run.meta, missing_ok=True)


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
