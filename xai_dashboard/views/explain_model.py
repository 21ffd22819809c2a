"""What the explanations view shows, as plain data: no Dash callbacks here, so it is tested directly.

A *source* is the image being explained, kept in the page (``dcc.Store``):

* ``{"kind": "test", "run": name, "index": i}``: a test image of a loaded run;
* ``{"kind": "upload", "run": name, "name": filename, "shape": [C, H, W], "pixels": base64}``:
  an upload already decoded and preprocessed for that run (a few KB, not the file).

The torch-backed modules (:mod:`..explain`, :mod:`..featuremaps`, :mod:`..precompute`)
are imported by the functions that run a model, not at module level: the
dashboard then serves its first page ~2 s sooner, before torch has loaded.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go

from .. import uploads
from ..explain_spec import Settings, layer_shape, parse_target
from ..methods import METHODS
from ..overlay import data_url, image_png, overlay_png


@dataclass
class Controls:
    method: str = "gradcam"
    target: str = "pred"       # "pred", "true" or a class index as text
    layer: str | None = None   # Grad-CAM layer; None = the run's default
    opacity: float = 0.5
    params: dict = field(default_factory=dict)  # registry parameter name -> value (None or absent: its default)

    def settings(self) -> Settings:
        # a number input may hand over 8.0; anything else non-integral is left for Settings to refuse
        params = {k: int(v) if isinstance(v, float) and v.is_integer() else v
                  for k, v in self.params.items() if v is not None}
        return Settings(self.method, self.layer or None, **params)


def method_options(unavailable: dict[str, str] | None = None) -> list[dict]:
    """Dropdown options for every registered method; those in ``unavailable`` (method -> reason) are
    disabled, with the reason as their tooltip."""
    unavailable = unavailable or {}
    return [{"label": m.label + (" (not for this model)" if name in unavailable else ""), "value": name,
             "disabled": name in unavailable, "title": unavailable.get(name, _shown(m))}
            for name, m in METHODS.items()]


def _shown(method) -> str:
    """What the map of ``method`` shows, for its tooltip."""
    if method.signed:
        return f"{method.label}: signed attribution, shown as {method.shown_as}"
    return f"{method.label}: {method.shown_as or 'non-negative map'}"


@dataclass
class Panel:
    """Everything the explanation card renders; ``error`` set means show only it."""

    label: str = ""
    probs: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    pred: int | None = None
    true: int | None = None
    input_src: str = ""
    overlay_src: str = ""
    description: str = ""
    contrast: list[tuple[str, str]] = field(default_factory=list)  # (caption, data URL)
    error: str = ""


def upload_to_source(contents: str | None, filename: str | None, run, max_bytes: int | None = None
                     ) -> tuple[dict | None, str]:
    """dcc.Upload ``contents`` -> ``(source, "")``, or ``(None, message)`` for a bad file."""
    name = str(filename or "upload")
    try:
        image = uploads.decode_image(uploads.parse_data_url(contents, max_bytes), run.meta, max_bytes=max_bytes)
    except uploads.UploadError as e:
        return None, f"{name}: {e}"
    return {"kind": "upload", "run": run.name, "name": name, "shape": list(image.shape),
            "pixels": base64.b64encode(image.tobytes()).decode("ascii")}, ""


def source_for_run(source: dict | None, run) -> dict:
    """Carry a source over to another run: same test index (clamped), or the upload if its shape fits."""
    n = len(run.labels)
    if source and source.get("kind") == "upload":
        if source.get("shape") == list(run.images.shape[1:]):
            return {**source, "run": run.name}
        return {"kind": "test", "run": run.name, "index": 0}
    index = int((source or {}).get("index", 0) or 0)
    return {"kind": "test", "run": run.name, "index": min(max(index, 0), n - 1)}


def source_image(store, source: dict) -> tuple[object, np.ndarray, int | None, str]:
    """``(LoadedRun, uint8 image (C, H, W), test index or None, description)``; KeyError/ValueError if invalid."""
    run = store.get(source["run"])
    if source["kind"] == "upload":
        shape = tuple(int(s) for s in source["shape"])
        if shape != tuple(run.images.shape[1:]):
            raise ValueError(f"this upload was prepared for {shape}, the run expects {tuple(run.images.shape[1:])}")
        pixels = np.frombuffer(base64.b64decode(source["pixels"]), dtype=np.uint8).reshape(shape)
        # a copy: frombuffer is read-only, and torch.as_tensor warns on read-only arrays
        return run, pixels.copy(), None, f"Upload: {source.get('name', '')}"
    index = int(source["index"])
    if not 0 <= index < len(run.labels):
        raise ValueError(f"test image #{index} is outside 0-{len(run.labels) - 1}")
    names = run.class_names
    return run, run.images[index], index, f"Test image #{index} (true class: {names[int(run.labels[index])]})"


def heatmap(run, image, index: int | None, target, settings: Settings, cache) -> np.ndarray:
    """Test images go through gradcam.npz when it has the answer; uploads are computed (and cached)."""
    from .. import explain
    from ..precompute import test_image_map

    if index is not None:
        return test_image_map(run, index, target, settings, cache)
    return explain.explain_image(run, image, target, settings, cache)


def build_panel(store, source: dict | None, controls: Controls, cache=None, contrast: bool = True) -> Panel:
    """The prediction, overlay and (with ``contrast``) the three contrast maps for ``source``."""
    from .. import explain

    if not source:
        return Panel(error="Choose a test image or upload one.")
    try:
        run, image, index, description = source_image(store, source)
        settings = controls.settings().resolved(run.meta)
        if index is not None:
            probs = run.probs[index]
        elif controls.target == "pred":  # Grad-CAM of a new upload: prediction and map in one pass
            probs = explain.explain_predicted(run, image, settings, cache)[0]
        else:
            probs = explain.predict(run, image, cache)
        pred = int(np.argmax(probs))
        true = int(run.labels[index]) if index is not None else None
        target = parse_target(controls.target, run.class_names, pred, true)
        maps = lambda t: heatmap(run, image, index, t, settings, cache)  # noqa: E731
        alpha = float(controls.opacity)
        names = run.class_names
        # "why pred rather than X": X is the true class for a mistake, else the runner-up
        other = true if true is not None and true != pred else int(np.argsort(-probs)[1])
        why = "true class" if other == true else "runner-up"
        pairs = [(f"predicted: {names[pred]}", pred), (f"{why}: {names[other]}", other),
                 (f"why {names[pred]} rather than {names[other]} (logit difference)", (pred, other))]
        return Panel(
            label=f"Predicted: {names[pred]} ({probs[pred]:.1%})", probs=np.asarray(probs), class_names=names,
            pred=pred, true=true, input_src=data_url(image_png(image)),
            overlay_src=data_url(overlay_png(image, maps(target), alpha)), description=description,
            contrast=[(caption, data_url(overlay_png(image, maps(t), alpha, 160)))
                      for caption, t in (pairs if contrast else [])])
    except (KeyError, ValueError) as e:  # ExplainError and UploadError are ValueErrors
        return Panel(error=str(e.args[0]) if e.args else str(e))


def probabilities_figure(probs: np.ndarray, class_names: list[str], pred: int, true: int | None) -> go.Figure:
    """Horizontal bars of every class probability; predicted class in blue, true class outlined."""
    colours = ["#3b6fb6" if i == pred else "#b8c4d6" for i in range(len(probs))]
    lines = [2 if i == true else 0 for i in range(len(probs))]
    fig = go.Figure(go.Bar(x=probs, y=class_names, orientation="h", marker_color=colours,
                           marker_line=dict(width=lines, color="#1b7837"),
                           hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(height=40 + 22 * len(probs), margin=dict(l=10, r=10, t=10, b=30),
                      xaxis=dict(range=[0, 1], tickformat=".0%"), yaxis=dict(autorange="reversed"))
    return fig


@dataclass
class FeatureView:
    grid: go.Figure
    contrib: go.Figure
    filters: go.Figure | None


def build_feature_view(store, source: dict, layer: str | None, show_all: bool) -> FeatureView:
    """Channels of ``layer`` (top 16 by mean activation, or all), their contributions, first-conv filters."""
    from .. import explain, featuremaps

    run, image, _index, _ = source_image(store, source)
    layer = layer or run.meta["gradcam_layer"]
    layer_shape(run.meta, layer)  # unknown layer -> ExplainError
    with run.lock:
        model = explain.shared_model(run)
        probe = featuremaps.probe_layer(model, explain.to_input(image, run.meta), layer)
        conv = featuremaps.first_conv(model)
        weight = conv[1].weight.detach().clone() if conv else None
    target_name = run.class_names[probe.target]
    if probe.spatial:
        grid = featuremaps.channel_grid_figure(probe, featuremaps.top_channels(probe, None if show_all else 16))
    else:
        grid = featuremaps.vector_figure(probe)
    filters = featuremaps.filters_figure(conv[0], weight) if conv else None
    return FeatureView(grid, featuremaps.contribution_figure(probe, target_name), filters)


# ------------------------------------------------------------------ sanity check (sanity.json)

def sanity_data(run) -> tuple[dict | None, str]:
    """LoadedRun ``run``'s sanity.json data and, when it is absent, stale or unfinished, why (else "")."""
    from ..sanity_file import load_sanity

    return load_sanity(run.run.path, run.meta)


def cascade_figure(data: dict, metric: str = "spearman") -> go.Figure:
    """Similarity to the trained model's maps (``metric``: "spearman" or "ssim", mean with its 95 % CI)
    against the blocks randomised so far, one line per method, and the pass/fail threshold."""
    from ..sanity_file import THRESHOLD

    fig = go.Figure()
    for method, steps in data["cascade"].items():
        if not steps:
            continue
        x = ["none"] + [s["block"] for s in steps]
        mean = [1.0] + [s[metric]["mean"] for s in steps]
        hi = [0.0] + [s[metric]["ci95"][1] - s[metric]["mean"] for s in steps]
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers", name=METHODS[method].label,
                                 error_y=dict(type="data", array=hi, visible=True, thickness=1),
                                 hovertemplate=f"{METHODS[method].label}: %{{y:.2f}} after %{{x}}<extra></extra>"))
    fig.add_hline(y=THRESHOLD, line_dash="dash", line_color="#c0392b",
                  annotation_text=f"{THRESHOLD}: above after full randomisation = fails",
                  annotation_position="top left")
    words = "mean Spearman rank correlation" if metric == "spearman" else "mean SSIM"
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=10, b=40), legend=dict(orientation="h", y=-0.25),
                      xaxis_title="blocks re-initialised, cumulatively from the head", yaxis_title=words,
                      yaxis=dict(range=[-0.25, 1.05]))
    return fig
