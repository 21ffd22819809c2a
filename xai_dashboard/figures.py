"""Plotly figure builders: plain data in, ``go.Figure`` out (no Dash, no run objects)."""
from __future__ import annotations

import textwrap

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3",
           "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]

# Every chart's plotly config (dcc.Graph(config=...)): the mode bar when the pointer is over the chart,
# its camera button saving a PNG at 3x the size on screen (a 600 px chart becomes 1800 px: sharp in a
# report or on a slide). No "Share chart" button: plotly.js 4 would offer to upload the data to its cloud.
# Only the buttons a chart here is used with (save, zoom, pan, reset): a short bar over a narrow card's
# corner, where a title, legend or bars may sit; charts whose points are selected (SELECT_CONFIG) keep
# box and lasso, and zoom with the wheel.
_UNUSED = ["zoomIn2d", "zoomOut2d", "autoScale2d", "toggleSpikelines", "hoverClosestCartesian",
           "hoverCompareCartesian"]
GRAPH_CONFIG = {"displayModeBar": "hover", "displaylogo": False, "showSendToCloud": False,
                "modeBarButtonsToRemove": [*_UNUSED, "select2d", "lasso2d"],
                "toImageButtonOptions": {"format": "png", "scale": 3, "filename": "xai-dashboard-chart"}}
SELECT_CONFIG = {**GRAPH_CONFIG, "modeBarButtonsToRemove": _UNUSED, "scrollZoom": True}
MODEBAR = 28  # px the mode bar takes at a chart's top: titles are written below it, bars begin below it
_MARGIN = dict(l=60, r=20, t=MODEBAR + 34, b=50)  # the title's line below the mode bar


def score_text(value: float, signed: bool = False) -> str:
    """A score to 3 significant digits (``0.0134``, ``0.982``, ``+0.00041``): on a 100-class run the AUCs
    are near 0.01, where three decimals would hide the differences a verdict rests on."""
    return f"{value:{'+' if signed else ''}#.3g}"
# Off-diagonal cells use the lower half of the scale (white -> red), the diagonal the upper
# half (pale -> deep green): mistakes stay readable instead of being washed out by the
# diagonal, which usually holds most of the test set.
_CM_SCALE = [[0.0, "#ffffff"], [0.5, "#c0392b"], [0.5001, "#e5f5e0"], [1.0, "#1b7837"]]


def _base(fig: go.Figure, title: str, height: int = 380) -> go.Figure:
    fig.update_layout(template="plotly_white", title=dict(text=title, x=0.01, y=1, yref="container", yanchor="top",
                                                          pad=dict(t=MODEBAR), font=dict(size=15)),
                      margin=_MARGIN, height=height, font=dict(family="Inter, system-ui, sans-serif", size=12))
    return fig


def placeholder(height: int) -> dict:
    """An empty, axis-less figure as a plain dict: for layouts, where building (and validating)
    plotly objects would slow start-up."""
    return {"data": [], "layout": {"height": height, "xaxis": {"visible": False}, "yaxis": {"visible": False},
                                   "margin": {"l": 0, "r": 0, "t": 0, "b": 0}}}


def empty_figure(message: str, height: int = 300) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font=dict(size=14, color="#666"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _base(fig, "", height)


def colorbar_figure(lo: float, hi: float, colorscale: str, title: str, signed: bool = False,
                    length: int = 256, horizontal: bool = False) -> go.Figure:
    """The colour bar of a map drawn as a PNG beside it: ``colorscale`` from ``lo`` to ``hi``,
    ``length`` px long; ``signed``: a diverging scale centred on zero (``zmid=0``, ``lo = -hi``).

    The bar belongs to a heatmap of the two ends kept outside the visible axis range, so only
    the bar shows.
    """
    text = "<br>".join(textwrap.wrap(title, 30)) if horizontal else title  # a short bar: the title on lines
    bar = dict(title=dict(text=text, side="top" if horizontal else "right", font=dict(size=11)), thickness=12,
               len=1, outlinewidth=0, tickfont=dict(size=10), tickformat=".2~g", nticks=5,
               **(dict(orientation="h", x=0, xanchor="left", y=0, yanchor="bottom") if horizontal
                  else dict(x=0, xanchor="left", y=0.5)))
    fig = go.Figure(go.Heatmap(z=[[lo, hi]], zmin=lo, zmax=hi, zmid=0 if signed else None, colorscale=colorscale,
                               colorbar=bar, hoverinfo="skip"))
    fig.update_xaxes(visible=False, range=[10, 11])
    fig.update_yaxes(visible=False, range=[10, 11])
    size = dict(height=76, width=length) if horizontal else dict(height=length, width=96)
    fig.update_layout(**size, margin=dict(l=0, r=0, t=0, b=0), plot_bgcolor="rgba(0,0,0,0)",
                      paper_bgcolor="rgba(0,0,0,0)", font=dict(family="Inter, system-ui, sans-serif"))
    return fig


TEXT_MAX_CLASSES = 20  # above this, numbers in cells would overlap: counts go to the hover only
MAX_CURVES = 10        # above this many classes, a legend per class would bury the plot


def matrix_height(k: int) -> int:
    """Pixels for a ``k x k`` heatmap: ~10 px a row at 100 classes, never below the two-class card."""
    return int(min(max(480, 160 + 10 * k), 1200))


def percent_text(share: np.ndarray) -> np.ndarray:
    """Shares in [0, 1] as cell text: whole percents from 1% up, one decimal below (a rare confusion
    is not "0%"), "<0.1%" for a non-zero share that would round to 0.0, and "0%" for none at all."""
    pct = np.asarray(share, dtype=np.float64) * 100
    return np.where(pct >= 1, np.char.mod("%.0f%%", pct),
                    np.where(pct >= 0.05, np.char.mod("%.1f%%", pct), np.where(pct > 0, "<0.1%", "0%")))


def confusion_figure(cm: np.ndarray, class_names: list[str], normalised: bool = False,
                     title: str | None = None) -> go.Figure:
    """Heatmap of ``cm`` ``(K, K)`` (rows true, columns predicted) with count and row share on hover.

    Clicks report ``x`` = predicted and ``y`` = true class name. Cells carry their number only
    up to :data:`TEXT_MAX_CLASSES` classes.
    """
    k = len(class_names)
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape), where=totals > 0)
    value = share if normalised else cm.astype(np.float64)
    diag = np.eye(k, dtype=bool)
    off_max = max(value[~diag].max(initial=0.0), 1e-12)
    on_max = max(value[diag].max(initial=0.0), 1e-12)
    colour = np.where(diag, 0.5001 + 0.4999 * value / on_max, 0.5 * value / off_max)
    text = percent_text(share) if normalised else cm.astype(str)
    labelled = k <= TEXT_MAX_CLASSES
    fig = go.Figure(go.Heatmap(
        z=colour, x=class_names, y=class_names, text=text if labelled else None,
        texttemplate="%{text}" if labelled else None,
        customdata=np.dstack([cm, share]), colorscale=_CM_SCALE, zmin=0, zmax=1, showscale=False,
        xgap=1 if labelled else 0, ygap=1 if labelled else 0,
        hovertemplate="true <b>%{y}</b> → predicted <b>%{x}</b><br>%{customdata[0]:,} images"
                      "<br>%{customdata[1]:.1%} of true %{y}<extra></extra>",
    ))
    fig.update_xaxes(title="Predicted class", type="category", side="bottom", tickangle=-30)
    fig.update_yaxes(title="True class", type="category", autorange="reversed")
    if title is None:
        title = ("Confusion matrix (row-normalised)" if normalised else "Confusion matrix (counts)") \
            + " — click a cell to see its images"
    return _base(fig, title, height=matrix_height(k) if k > 2 else 380)


def class_metrics_figure(rows: list[dict]) -> go.Figure:
    """Grouped bars of precision / recall / F1 per class (``rows`` from ``per_class_metrics``)."""
    names = [r["class"] for r in rows]
    fig = go.Figure([
        go.Bar(name=m.capitalize() if m != "f1" else "F1", x=names, y=[r[m] for r in rows], marker_color=c,
               hovertemplate="%{x}: %{y:.3f}<extra>" + m + "</extra>")
        for m, c in zip(("precision", "recall", "f1"), PALETTE)
    ])
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    fig.update_yaxes(range=[0, 1], title="score")
    fig.update_xaxes(type="category")
    return _base(fig, "Per-class precision, recall and F1")


def history_figure(history: list[dict]) -> go.Figure:
    """Loss and accuracy per epoch, train vs validation when recorded."""
    if not history:
        return empty_figure("No training history recorded for this run")
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    for col, metric in ((1, "loss"), (2, "acc")):
        for split, colour in (("train", PALETTE[0]), ("val", PALETTE[1])):
            key = f"{split}_{metric}"
            ys = [h.get(key) for h in history]
            if all(y is None for y in ys):
                continue
            fig.add_trace(go.Scatter(x=epochs, y=ys, name=split, mode="lines+markers", line=dict(color=colour),
                                     legendgroup=split, showlegend=col == 1,
                                     hovertemplate=f"epoch %{{x}}: %{{y:.4f}}<extra>{key}</extra>"), row=1, col=col)
    fig.update_xaxes(title="epoch")
    return _base(fig, "Training curves")


def shown_curves(curves: list[dict], score: str, limit: int = MAX_CURVES) -> list[int]:
    """Indices of the classes to draw: all up to ``limit``, else the ``limit`` with the lowest ``score``
    (the classes worth a look); classes without a curve (absent from the test set) are skipped."""
    present = [i for i, c in enumerate(curves) if c[score] == c[score]]  # NaN != NaN
    if len(present) <= limit:
        return present
    return sorted(sorted(present, key=lambda i: (curves[i][score], i))[:limit])


def _one_vs_rest(fig: go.Figure, curves: list[dict], class_names: list[str], x: str, y: str, score: str,
                 label: str, titles: tuple[str, str, str]) -> go.Figure:
    """One line per shown class (:func:`shown_curves`) from ``curves[i][x]`` / ``curves[i][y]``."""
    shown = shown_curves(curves, score)
    if not shown:
        return empty_figure("No class has both positive and negative test images", height=420)
    for n, i in enumerate(shown):
        c = curves[i]
        fig.add_trace(go.Scatter(x=c[x], y=c[y], mode="lines", name=f"{class_names[i]} ({label} {c[score]:.3f})",
                                 line=dict(color=PALETTE[n % len(PALETTE)], width=1.6)))
    title = titles[2]
    if len(shown) < len(curves):
        mean = np.nanmean([c[score] for c in curves])
        title += f" — {len(shown)} lowest of {len(curves)} classes; macro {label} {mean:.3f}"
    fig.update_xaxes(title=titles[0], range=[0, 1])
    fig.update_yaxes(title=titles[1], range=[0, 1.02])
    return _base(fig, title, height=420)


def roc_figure(curves: list[dict], class_names: list[str]) -> go.Figure:
    chance = go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="#bbb"),
                        showlegend=False, hoverinfo="skip")
    return _one_vs_rest(go.Figure([chance]), curves, class_names, "fpr", "tpr", "roc_auc", "AUC",
                        ("false positive rate", "true positive rate", "ROC, one-vs-rest"))


def pr_figure(curves: list[dict], class_names: list[str]) -> go.Figure:
    return _one_vs_rest(go.Figure(), curves, class_names, "recall", "precision", "ap", "PR-AUC",
                        ("recall", "precision", "Precision-recall, one-vs-rest"))


def operating_point_figures(curve: dict, point: dict, name: str) -> tuple[go.Figure, go.Figure]:
    """ROC and precision-recall curves of class ``name`` against the rest, each with the operating
    point of ``point`` (from :func:`~xai_dashboard.thresholds.metrics_at`) marked.

    ``curve`` holds ``fpr``/``tpr``/``roc_auc``/``precision``/``recall``/``ap`` (one entry of
    ``roc_pr_curves``); the PR plot's dotted line is the prevalence, a random classifier's precision.
    """
    fpr = point["fp"] / max(point["fp"] + point["tn"], 1)
    marker = dict(size=12, color=PALETTE[3], symbol="circle", line=dict(width=2, color="#fff"))
    label = f"threshold {point['threshold']:.4g}"
    roc = go.Figure([
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="#bbb"), hoverinfo="skip",
                   showlegend=False),
        go.Scatter(x=curve["fpr"], y=curve["tpr"], mode="lines", name=f"{name} vs rest",
                   line=dict(color=PALETTE[0], width=2)),
        go.Scatter(x=[fpr], y=[point["recall"]], mode="markers", name=label, marker=marker,
                   hovertemplate="FPR %{x:.3f}<br>recall %{y:.3f}<extra>" + label + "</extra>"),
    ])
    roc.update_xaxes(title="false positive rate", range=[0, 1])
    roc.update_yaxes(title="true positive rate (recall)", range=[0, 1.02])
    pr = go.Figure([
        go.Scatter(x=[0, 1], y=[point["prevalence"]] * 2, mode="lines", line=dict(dash="dot", color="#bbb"),
                   name=f"prevalence {point['prevalence']:.1%}", hoverinfo="skip"),
        go.Scatter(x=curve["recall"], y=curve["precision"], mode="lines", name=f"{name} vs rest",
                   line=dict(color=PALETTE[0], width=2)),
        go.Scatter(x=[point["recall"]], y=[point["precision"]], mode="markers", name=label, marker=marker,
                   hovertemplate="recall %{x:.3f}<br>precision %{y:.3f}<extra>" + label + "</extra>"),
    ])
    pr.update_xaxes(title="recall", range=[0, 1])
    pr.update_yaxes(title="precision", range=[0, 1.02])
    for fig in (roc, pr):
        fig.update_layout(legend=dict(orientation="h", y=-0.2, x=0))
    return (_base(roc, f"ROC — {name} vs rest, ROC-AUC {curve['roc_auc']:.3f}", height=420),
            _base(pr, f"Precision-recall — PR-AUC {curve['ap']:.3f} (prevalence {point['prevalence']:.1%})",
                  height=420))


def reliability_figure(cal: dict) -> go.Figure:
    """Accuracy per confidence bin against the diagonal; bar width = bin width, hover gives the count."""
    lo, hi = np.asarray(cal["bin_lo"]), np.asarray(cal["bin_hi"])
    fig = go.Figure([
        go.Bar(x=(lo + hi) / 2, y=cal["accuracy"], width=hi - lo, name="accuracy", marker_color=PALETTE[0],
               customdata=np.column_stack([cal["confidence"], cal["count"]]) if len(lo) else None,
               hovertemplate="confidence %{customdata[0]:.3f}<br>accuracy %{y:.3f}"
                             "<br>%{customdata[1]:,} images<extra></extra>"),
        go.Scatter(x=cal["confidence"], y=cal["confidence"], mode="markers", name="mean confidence",
                   marker=dict(color=PALETTE[3], symbol="line-ew-open", size=14, line=dict(width=2))),
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="#999"), name="perfect"),
    ])
    fig.update_xaxes(title="top-1 confidence", range=[0, 1])
    fig.update_yaxes(title="accuracy", range=[0, 1])
    fig.update_layout(legend=dict(orientation="h", y=1.12, x=1, xanchor="right"), bargap=0)
    return _base(fig, f"Reliability diagram — ECE {cal['ece']:.3f}", height=420)


def top_k_figure(top: list[tuple[int, float]], class_names: list[str], true_label: int) -> go.Figure:
    """Horizontal bars of the top-k probabilities; the true class is green, others blue."""
    names = [class_names[c] for c, _ in top][::-1]
    probs = [p for _, p in top][::-1]
    colours = [PALETTE[2] if c == true_label else PALETTE[0] for c, _ in top][::-1]
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", marker_color=colours,
                           text=[f"{p:.1%}" for p in probs], textposition="auto",
                           hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_xaxes(range=[0, 1], title="probability")
    fig.update_yaxes(type="category")
    fig.update_layout(margin=dict(l=90, r=20, t=40, b=40))
    return _base(fig, "Top-5 probabilities", height=260)


def compare_accuracy_figure(class_names: list[str], acc_a: list[float], acc_b: list[float],
                            name_a: str, name_b: str) -> go.Figure:
    fig = go.Figure([
        go.Bar(name=name_a, x=class_names, y=acc_a, marker_color=PALETTE[0], hovertemplate="%{x}: %{y:.3f}"),
        go.Bar(name=name_b, x=class_names, y=acc_b, marker_color=PALETTE[1], hovertemplate="%{x}: %{y:.3f}"),
    ])
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    fig.update_yaxes(range=[0, 1], title="per-class accuracy (recall)")
    fig.update_xaxes(type="category")
    return _base(fig, "Per-class accuracy side by side")


def confusion_diff_figure(diff: np.ndarray, class_names: list[str], name_a: str, name_b: str) -> go.Figure:
    """``diff`` = cm_B − cm_A ``(K, K)``: on the diagonal blue is better, off it red is worse for B."""
    k = len(class_names)
    # Flip the diagonal's sign for colouring only, so "blue = B better" holds everywhere.
    signed = np.where(np.eye(k, dtype=bool), -diff, diff)
    lim = max(int(np.abs(diff).max(initial=0)), 1)
    labelled = k <= TEXT_MAX_CLASSES
    fig = go.Figure(go.Heatmap(
        z=signed, x=class_names, y=class_names, text=diff if labelled else None,
        texttemplate="%{text:+d}" if labelled else None, customdata=diff,
        colorscale="RdBu_r", zmin=-lim, zmax=lim, showscale=False, xgap=int(labelled), ygap=int(labelled),
        hovertemplate=f"true %{{y}} → predicted %{{x}}<br>{name_b} − {name_a}: %{{customdata:+d}}<extra></extra>",
    ))
    fig.update_xaxes(title="Predicted class", type="category", tickangle=-30)
    fig.update_yaxes(title="True class", type="category", autorange="reversed")
    return _base(fig, "Confusion difference B − A (blue: B better)", height=matrix_height(k) if k > 2 else 380)


def human_model_matrices_figure(human: np.ndarray, model: np.ndarray, class_names: list[str]) -> go.Figure:
    """Two row-normalised ``(K, K)`` confusion matrices (people's, the model's) side by side on one colour
    scale. Colour shows the off-diagonal shares (the diagonal, agreement, would swamp them); every cell is
    written as a percentage."""
    off = ~np.eye(len(human), dtype=bool)
    top = max(float(human[off].max(initial=0)), float(model[off].max(initial=0)), 1e-12)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("People: share of annotations", "Model: share of predictions"))
    labelled = len(class_names) <= TEXT_MAX_CLASSES
    for col, m in ((1, human), (2, model)):
        fig.add_trace(go.Heatmap(
            z=np.where(off, m, np.nan), x=class_names, y=class_names, coloraxis="coloraxis",
            text=np.char.mod("%.1f%%", m * 100), texttemplate="%{text}" if labelled else None,
            hovertemplate="given <b>%{y}</b> → <b>%{x}</b>: %{text}<extra></extra>"), row=1, col=col)
    fig.update_layout(coloraxis={"colorscale": "Reds", "cmin": 0, "cmax": top,
                                 "colorbar": {"title": "off-diagonal", "tickformat": ".0%"}})
    fig.update_yaxes(title="Given label", type="category", autorange="reversed")
    fig.update_xaxes(type="category", tickangle=-30)
    return _base(fig, "Confusion, row-normalised: people vs model", height=matrix_height(len(class_names)))


def entropy_scatter_figure(human_entropy: np.ndarray, model_entropy: np.ndarray, correct: np.ndarray) -> go.Figure:
    """People's label entropy against the model's, ``(N,)`` each in bits: one WebGL point per image, two
    traces (model right / wrong), ``customdata`` = test-set index (clicks report it)."""
    fig = go.Figure()
    for name, mask, colour in (("model right", correct, PALETTE[0]), ("model wrong", ~correct, "#c0392b")):
        idx = np.flatnonzero(mask)
        fig.add_trace(go.Scattergl(
            # customdata as a plain list: dcc.Graph reads a clicked point's customdata from the figure's data,
            # where a base64-encoded array would not be indexable
            x=human_entropy[idx].round(4), y=model_entropy[idx].round(4), customdata=idx.tolist(), mode="markers",
            name=name, marker={"size": 4, "color": colour, "opacity": 0.5},
            hovertemplate="#%{customdata}<br>people %{x:.2f} bits, model %{y:.2f} bits<extra></extra>"))
    fig.update_xaxes(title="Entropy of people's labels (bits)")
    fig.update_yaxes(title="Entropy of the model's probabilities (bits)")
    return _base(fig, "Per image: people's uncertainty vs the model's (click a point)", 420)
