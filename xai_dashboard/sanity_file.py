"""``RUN_DIR/sanity.json``: the model-randomisation sanity check of every attribution method
(Adebayo et al. 2018), a :mod:`trainer.artifacts` file. :mod:`.sanity` computes it (torch);
reading needs only the standard library, so the explanations view checks it without a model.

Layout of ``data`` (``k`` = cascade steps done, ``complete`` once ``k`` = number of blocks)::

    {"config":  {"images": N, "seed": s, "blocks": [names, input -> head], "rule": "...",
                 "target": "...", "methods": [...], "skipped": {method: reason}},
     "images":  [test indices],
     "cascade": {method: [{"randomised": [block names, head first], "spearman": {...}, "ssim": {...}}, ...]},
     "complete": bool,
     "data_randomisation": {"methods": {method: {"spearman": {...}, "ssim": {...}}}, ...} | absent}

where each ``{...}`` is ``{"mean", "ci95": [lo, hi], "n"}`` over the images. Bound to the
weights, the test set, the architecture and preprocessing and the Grad-CAM layer.
"""
from __future__ import annotations

from trainer.artifacts import ArtifactError, declare, read

SANITY = declare("sanity.json", version=1, kind="json",
                 binds=("weights", "test_set", "preprocessing", "gradcam_layer"),
                 producer="xai-dashboard precompute sanity {run}")
# A method whose maps stay this similar (mean Spearman rank correlation) to the trained model's
# after every block is re-initialised does not depend on what the model learned.
THRESHOLD = 0.5
PRIMARY = "spearman"
REFERENCE = 'Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018'
BADGE = "fails the randomisation check"


def load_sanity(run_dir, meta: dict) -> tuple[dict | None, str]:
    """``(data, "")`` for a current, complete sanity.json; else ``(data or None, why)``: absent, stale
    or unfinished, in the artifact reader's words with the command that (re)computes it."""
    try:
        data = read(run_dir, SANITY, meta)
    except ArtifactError as e:
        return None, str(e)
    if not isinstance(data, dict) or not isinstance(data.get("cascade"), dict):
        return None, f"{SANITY.name}: malformed; {SANITY.rerun(run_dir)}"
    if not data.get("complete"):
        steps = max((len(v) for v in data["cascade"].values()), default=0)
        return data, (f"{SANITY.name}: unfinished ({steps} of {len(data['config']['blocks'])} blocks randomised); "
                      f"{SANITY.rerun(run_dir)} to finish it")
    return data, ""


def final_similarity(data: dict | None) -> dict[str, float]:
    """``{method: mean Spearman after the last block}`` of a complete cascade; empty otherwise."""
    if not data or not data.get("complete"):
        return {}
    return {m: steps[-1][PRIMARY]["mean"] for m, steps in data["cascade"].items() if steps}


def failing_methods(data: dict | None) -> dict[str, float]:
    """The methods whose similarity after full randomisation stays above :data:`THRESHOLD`."""
    return {m: s for m, s in final_similarity(data).items() if s > THRESHOLD}


def badge_title(similarity: float) -> str:
    """The one-line explanation shown with the badge (tooltip and caption)."""
    return (f"With every layer re-initialised at random, its maps still have a rank correlation of "
            f"{similarity:.2f} (> {THRESHOLD}) with the trained model's: they show the input more than "
            f"what the model learned. {REFERENCE}.")
