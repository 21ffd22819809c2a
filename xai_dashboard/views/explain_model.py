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
import io
import re
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go

from .. import uploads
from ..explain_spec import Settings, layer_shape, parse_target
from ..figures import MODEBAR, colorbar_figure
from ..images import DETAIL_SIZE
from ..methods import METHODS, draws_signed
from ..overlay import DEFAULT_COLORMAP, DIVERGING, data_url, image_png, map_range, overlay_png


@dataclass
class Controls:
    method: str = "gradcam"
    target: str = "pred"       # "pred", "true", a class index as text, or "contrast" (why pred rather than other)
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
        return f"{method.label}: signed attribution, red where it speaks for the class, blue where against"
    return f"{method.label}: {method.shown_as or 'non-negative map'}, relative to its maximum"


def ignored_because(method: str) -> dict[str, str]:
    """The page's controls ``method`` does not read -> why, for their tooltips: the layer (from the
    registry's ``needs_layer``) and the parameters other methods declare."""
    m = METHODS[method]
    out = {} if m.needs_layer else {
        "layer": f"{m.label} does not use a layer: it attributes the input pixels directly"}
    mine = {p.name for p in m.params}
    for other in METHODS.values():
        for p in other.params:
            if p.name not in mine:
                users = [o.label for o in METHODS.values() if p in o.params]
                out[p.name] = f"{p.label} is used by {' and '.join(users)} only, not by {m.label}"
    return out


@dataclass(frozen=True)
class Shown:
    """One map as drawn: ``caption`` in words; ``heat`` float32 ``(H, W)``, in [0, 1] (relative) or, when
    ``signed`` (:func:`..methods.draws_signed`), with its sign and magnitude; its overlay ``png``; and
    ``legend``, the title of its colour bar."""

    caption: str
    heat: np.ndarray
    signed: bool
    png: bytes
    legend: str

    @property
    def src(self) -> str:
        return data_url(self.png)

    def colorbar(self, length: int = DETAIL_SIZE, horizontal: bool = False) -> go.Figure:
        """The colour bar that reads this overlay: ``±max|a|`` on the diverging scale, or [0, 1]."""
        lo, hi = map_range(self.heat, self.signed)
        return colorbar_figure(lo, hi, DIVERGING if self.signed else DEFAULT_COLORMAP, self.legend, self.signed,
                               length, horizontal)


_ROLES = {"pred": "the predicted class", "true": "the true class", "runner-up": "the runner-up"}


def target_words(spec: str, target, names: list[str], pred: int, true: int | None) -> str:
    """What a map explains, in words: "for the predicted class, dog", "for class 3, cat (the true
    class)", or for a pair "why dog rather than cat"; ``spec`` is the target as chosen (a role or an index)."""
    if isinstance(target, tuple):
        return f"why {names[target[0]]} rather than {names[target[1]]}"
    if spec in _ROLES:
        return f"for {_ROLES[spec]}, {names[target]}"
    role = "pred" if target == pred else "true" if target == true else None
    return f"for class {target}, {names[target]}" + (f" ({_ROLES[role]})" if role else "")


def legend(signed: bool, target, names: list[str]) -> str:
    """A colour bar's title: what its colours and numbers mean."""
    if not signed:
        return "attribution, relative (1 = this map's maximum)"
    if isinstance(target, tuple):
        return f"signed: + for {names[target[0]]}, − for {names[target[1]]}"
    return f"signed: + for {names[target]}, − against"


@dataclass
class Panel:
    """Everything the explanation card renders; ``error`` set means show only it."""

    label: str = ""
    probs: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    pred: int | None = None
    true: int | None = None
    input_src: str = ""
    overlay: Shown | None = None
    description: str = ""
    contrast: list[Shown] = field(default_factory=list)  # predicted, other, why predicted rather than other
    error: str = ""
    stem: str = ""  # what exported files of ``overlay`` are called (:func:`export_stem`)

    @property
    def overlay_src(self) -> str:
        return self.overlay.src if self.overlay else ""


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


def heatmap(run, image, index: int | None, target, settings: Settings, cache, signed: bool = False) -> np.ndarray:
    """Test images go through gradcam.npz when it has the answer; uploads are computed (and cached).
    ``signed``: the map with its sign and magnitude (:func:`..explain.attribute`), else in [0, 1]."""
    from .. import explain
    from ..precompute import test_image_map

    if index is not None:
        return test_image_map(run, index, target, settings, cache, signed)
    return explain.explain_image(run, image, target, settings, cache, signed)


CONTRAST_SIZE = 160  # px of each contrast tile


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
        elif controls.target == "pred" and not METHODS[settings.method].signed:
            probs = explain.explain_predicted(run, image, settings, cache)[0]  # Grad-CAM: one pass for both
        else:
            probs = explain.predict(run, image, cache)
        pred = int(np.argmax(probs))
        true = int(run.labels[index]) if index is not None else None
        names = run.class_names
        # "why pred rather than X": X is the true class for a mistake, else the runner-up
        other = true if true is not None and true != pred else int(np.argsort(-probs)[1])
        spec = controls.target
        target = (pred, other) if spec == "contrast" else parse_target(spec, names, pred, true)
        label = METHODS[settings.method].label

        def draw(spec, t, size=DETAIL_SIZE) -> Shown:
            signed = draws_signed(settings.method, t)
            heat = heatmap(run, image, index, t, settings, cache, signed)
            caption = f"{label}{':' if isinstance(t, tuple) else ''} {target_words(spec, t, names, pred, true)}"
            return Shown(caption, heat, signed, overlay_png(image, heat, float(controls.opacity), size, signed=signed),
                         legend(signed, t, names))

        why = "true" if other == true else "runner-up"
        tiles = [draw("pred", pred, CONTRAST_SIZE), draw(why, other, CONTRAST_SIZE),
                 draw("contrast", (pred, other), CONTRAST_SIZE)] if contrast else []
        return Panel(
            label=f"Predicted: {names[pred]} ({probs[pred]:.1%})", probs=np.asarray(probs), class_names=names,
            pred=pred, true=true, input_src=data_url(image_png(image)), overlay=draw(spec, target),
            description=description, contrast=tiles, stem=export_stem(source, settings.method, target, names))
    except (KeyError, ValueError) as e:  # ExplainError and UploadError are ValueErrors
        return Panel(error=str(e.args[0]) if e.args else str(e))


def export_stem(source: dict, method: str, target, names: list[str]) -> str:
    """``RUN_test12_gradcam_dog`` / ``RUN_upload-cat.jpg_saliency_dog-vs-cat``: run, image, method, target
    (a pair as "a-vs-b"), in characters that are safe in any file system."""
    image = f"test{source['index']}" if source.get("kind") == "test" else f"upload-{source.get('name', '')}"
    aim = "-vs-".join(names[t] for t in target) if isinstance(target, tuple) else names[target]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join([str(source["run"]), image, method, aim]))[:150]


def export_files(panel: Panel) -> dict[str, bytes]:
    """The panel's overlay as files: ``STEM.png`` (as drawn) and ``STEM.npy``, the map float32 ``(H, W)``
    at the network's input resolution (in [0, 1], or signed in the method's units)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(panel.overlay.heat, dtype=np.float32), allow_pickle=False)
    return {f"{panel.stem}.png": panel.overlay.png, f"{panel.stem}.npy": buffer.getvalue()}


def probabilities_figure(probs: np.ndarray, class_names: list[str], pred: int, true: int | None) -> go.Figure:
    """Horizontal bars of every class probability; predicted class in blue, true class outlined."""
    colours = ["#3b6fb6" if i == pred else "#b8c4d6" for i in range(len(probs))]
    lines = [2 if i == true else 0 for i in range(len(probs))]
    fig = go.Figure(go.Bar(x=probs, y=class_names, orientation="h", marker_color=colours,
                           marker_line=dict(width=lines, color="#1b7837"),
                           hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(height=30 + MODEBAR + 22 * len(probs), margin=dict(l=10, r=10, t=MODEBAR, b=30),
                      xaxis=dict(range=[0, 1], tickformat=".0%"), yaxis=dict(autorange="reversed"))
    return fig


@dataclass
class FeatureView:
    grid: go.Figure
    contrib: go.Figure
    filters: go.Figure | None


def build_feature_view(store, source: dict, layer: str | None, show_all: bool) -> FeatureView:
    """Channels of ``layer`` (the contribution chart's 16, or all in channel order), their contributions,
    first-conv filters."""
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
        # The default grid shows the chart's channels so every bar's map is on screen; "all" goes
        # in channel order so any channel named in the chart is found by its number.
        k = len(probe.activation)
        channels = np.arange(k) if show_all else featuremaps.contribution_channels(probe)
        title = (f"{layer}: all {k} channels, in channel order" if show_all
                 else f"{layer}: the {len(channels)} channels of the contribution chart")
        grid = featuremaps.channel_grid_figure(probe, channels, title)
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
