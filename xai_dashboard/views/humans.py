"""Humans vs model page: people's label distributions (e.g. CIFAR-10H) beside the model's outputs.

Needs an annotator file that fits the run's test set (:mod:`xai_dashboard.human_labels`); without
one the page says where it looked, and a refused file is named with the reason. The numbers come
from :mod:`xai_dashboard.human_analysis` (memoised per run and file); points of the entropy scatter
(WebGL, one per test image) and thumbnails of the slice galleries open the image in the errors view's
detail panel; the chosen slice downloads as CSV. Slice buttons reach the server through
:func:`.clicks.relay`: redrawing them (a run change) is no click.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from dash import ALL, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from .. import analysis, export, figures, inputs
from ..human_analysis import SLICES, Comparison, comparison
from ..human_labels import BESIDE_DATA, HUMAN_LABELS_ENV, annotations, entropy_bits
from . import clicks, gallery_item
from .labels import open_in_detail
from .opened import opened_id, when_opened

TITLE = "Humans vs model"
TAB = __name__.rpartition(".")[2]
ITEM, SLICE = "hv-item", "hv-slice"  # pattern-matching id types
SLICE_CLICK = "hv-slice-click"  # the relayed slice-button click (clicks.relay)
_GRAPH = figures.GRAPH_CONFIG
_BLANK = figures.placeholder(300)


def layout(store) -> html.Div:
    return html.Div(className="view humans-view", children=[
        dcc.Store(id="hv-selection", data=None),
        dcc.Store(id="hv-page", data=0),
        clicks.store(SLICE_CLICK),
        dcc.Store(id="hv-drawn", data=None),  # the run whose figures the page holds
        html.Div(id="hv-status"),
        html.Div(className="card", children=[
            dcc.Graph(id="hv-matrices", config=_GRAPH, figure=_BLANK),
            html.P(id="hv-correlation", className="hint"),
        ]),
        html.Div(className="row", children=[
            html.Div(className="card half", children=[dcc.Graph(id="hv-scatter", config=_GRAPH, figure=_BLANK)]),
            html.Div(className="card half", children=[html.H3("Calibration against people"),
                                                      html.Div(id="hv-calibration")]),
        ]),
        html.Div(className="card gallery-card", children=[
            html.H3("Slices"),
            html.Div(id="hv-slices", className="hv-slices"),
            html.Div(className="toolbar", children=[
                html.H4(id="hv-gallery-title", children="Choose a slice"),
                html.Span([html.Span("0", id="hv-count"), " images"], className="count"),
                html.Div(className="pager", children=[
                    html.Button("‹ Prev", id="hv-prev", n_clicks=0),
                    html.Span(id="hv-page-label", children="1 / 1"),
                    html.Button("Next ›", id="hv-next", n_clicks=0),
                ]),
                html.Button("Download CSV", id="hv-export", n_clicks=0, className="export",
                            title="every image of this slice, in the gallery's order"),
                html.Span(id="hv-export-note"),
                dcc.Download(id="hv-download"),
            ]),
            html.Div(id="hv-gallery", className="gallery"),
        ]),
    ])


@lru_cache(maxsize=8)
def _figures(p: analysis.Predictions, annotated, class_names: tuple[str, ...]) -> tuple[dict, dict]:
    c = comparison(p, annotated)
    return (figures.human_model_matrices_figure(c.human_cm, c.model_cm, list(class_names)).to_dict(),
            figures.entropy_scatter_figure(c.human_entropy, c.model_entropy, p.preds == p.labels).to_dict())


def calibration_table(cal: dict) -> html.Table:
    rows = [("Accuracy (given labels)", f"{cal['accuracy']:.2%}"),
            ("Agreement with a random annotator", f"{cal['agreement']:.2%}"),
            ("ECE against the hard labels", f"{cal['ece_hard']:.4f}"),
            ("ECE against people's label shares", f"{cal['ece_human']:.4f}"),
            ("Cross-entropy to the hard labels (log loss)", f"{cal['ce_hard']:.4f} nats"),
            ("Cross-entropy to people's distribution", f"{cal['ce_human']:.4f} nats"),
            ("KL(people ‖ model)", f"{cal['kl_human']:.4f} nats"),
            ("Mean entropy of people's labels", f"{cal['human_entropy']:.4f} nats")]
    return html.Div([html.Table(className="kv", children=[html.Tr([html.Th(k), html.Td(v)]) for k, v in rows]),
                     html.P("ECE against people: 15 equal-width bins of the model's top probability; in each, the "
                            "mean share of people who chose the predicted class replaces the accuracy.",
                            className="hint")])


def slice_buttons(c: Comparison) -> list:
    return [html.Div(className="hv-slice", children=[
        html.Button(f"{title} · {len(c.slices[key]):,}", id={"type": SLICE, "slice": key}, n_clicks=0),
        html.Span(f" {definition}; ordered by {order}.", className="hint")])
        for key, (title, definition, order) in SLICES.items()]


def _not_found(store) -> str:
    beside = ", ".join(f"{name} beside the {spec} data" for spec, name in BESIDE_DATA.items())
    return (f"No annotator file for this run: start with --human-labels FILE, set {HUMAN_LABELS_ENV}, "
            f"or put {beside} (data folder: {store.data_dir or '$XAI_DATA_DIR'}).")


def _compared(store, run) -> tuple[Comparison, object]:
    found = annotations(run, store.data_dir)
    if found.probs is None:
        raise inputs.BadInput(found.problem or _not_found(store))
    return comparison(analysis.predictions_of(run), found), found


def slice_items(prefix: str, run, human: np.ndarray, indices: np.ndarray) -> list[html.Div]:
    """Thumbnails captioned with the given label, people's top class (share) and the model's (probability)."""
    names, items = run.class_names, []
    for i in indices.tolist():
        t, h, m = int(run.labels[i]), int(human[i].argmax()), int(run.preds[i])
        caption = [html.Span(names[t], className="lbl-true", title="given label"),
                   html.Span(f"people {names[h]} {human[i, h]:.0%}", className="conf", title="people's top class"),
                   html.Span(f"model {names[m]} {run.probs[i, m]:.0%}", className="lbl-pred " + (
                       "wrong" if m != t else "right"), title="the model's top class")]
        items.append(gallery_item(prefix, run, i, caption=caption, wrong=m != t, kind=ITEM))
    return items


def slice_frame(run, human: np.ndarray, indices: np.ndarray) -> pd.DataFrame:
    """The CSV of a slice: its images ``indices`` ``(M,)`` in the gallery's order, the image columns of
    every gallery CSV (:func:`.export.image_frame`), then what people said (``human`` ``(N, K)``: each
    test image's label shares) and both entropies in bits."""
    idx = np.asarray(indices, dtype=np.int64)
    names = np.asarray(run.class_names, dtype=object)
    shares = human[idx]
    frame = export.image_frame(run, idx)
    frame["people: top class"] = names[shares.argmax(1)]
    frame["people: share of top class"] = shares.max(1)
    frame["people: share of label"] = shares[np.arange(len(idx)), run.labels[idx]]
    frame["human entropy (bits)"] = entropy_bits(shares)
    frame["model entropy (bits)"] = entropy_bits(run.probs[idx])
    return frame


def register_callbacks(app, store) -> None:
    prefix = app.config.requests_pathname_prefix
    _register_comparison(app, store)
    _register_slices(app, store, prefix)
    open_in_detail(app, Input({"type": ITEM, "index": ALL}, "n_clicks"))
    open_in_detail(app, Input("hv-scatter", "clickData"))


def _register_comparison(app, store) -> None:
    """People's and the model's matrices, the entropy scatter, calibration and the slices' buttons."""
    @app.callback(Output("hv-status", "children"), Output("hv-matrices", "figure"),
                  Output("hv-correlation", "children"), Output("hv-scatter", "figure"),
                  Output("hv-calibration", "children"), Output("hv-slices", "children"), Output("hv-drawn", "data"),
                  Input("run-select", "value"), *when_opened(TAB), State("hv-drawn", "data"))
    @inputs.guarded(inputs.hint, inputs.figure, inputs.constant(""), inputs.figure, inputs.constant([]),
                    inputs.constant([]), inputs.constant(None))
    def update(run_name, _opened, tab, drawn):
        inputs.shown(tab, TAB)
        run = inputs.run_of(store, run_name)
        if ctx.triggered_id == opened_id(TAB) and drawn == run.name:
            raise PreventUpdate  # back on the tab: the page still holds this run's figures (10,000 points)
        c, found = _compared(store, run)
        matrices, scatter = _figures(analysis.predictions_of(run), found, tuple(run.class_names))
        r = c.correlation
        said = (f"Off-diagonal patterns ({r['cells']} cells): Pearson r = {r['pearson']:.3f}, Spearman ρ = "
                f"{r['spearman']:.3f}. People's matrix: every annotation, each image weighted equally.")
        status = html.P(f"People's labels from {found.source}.", className="hint")
        return status, matrices, said, scatter, calibration_table(c.calibration), slice_buttons(c), run.name


def _register_slices(app, store, prefix: str) -> None:
    """The gallery of the slice a button chose, paged, and its CSV."""
    @app.callback(Output("hv-gallery", "children"), Output("hv-gallery-title", "children"),
                  Output("hv-count", "children"), Output("hv-page-label", "children"),
                  Output("hv-selection", "data"), Output("hv-page", "data"),
                  Input(SLICE_CLICK, "data"), Input("hv-prev", "n_clicks"),
                  Input("hv-next", "n_clicks"), Input("run-select", "value"), *when_opened(TAB),
                  State("hv-selection", "data"), State("hv-page", "data"))
    @inputs.guarded(inputs.hint, inputs.constant("Choose a slice"), inputs.constant("0"), inputs.constant("1 / 1"),
                    inputs.constant(None), inputs.constant(0))
    def slice_gallery(click, _prev, _next, run_name, _opened, tab, chosen, page):
        inputs.shown(tab, TAB)
        trigger, page = ctx.triggered_id, inputs.page(page)
        button = clicks.clicked(click, SLICE) if trigger == SLICE_CLICK else None
        if button is not None:
            chosen, page = button.get("slice"), 0
        elif trigger == "run-select":
            chosen, page = None, 0
        page = max(page - 1, 0) if trigger == "hv-prev" else page + 1 if trigger == "hv-next" else page
        if chosen is None:
            return [], "Choose a slice", "0", "1 / 1", None, 0
        chosen = inputs.one_of(chosen, SLICES, "slice")
        run = inputs.run_of(store, run_name)
        c, found = _compared(store, run)
        shown, page, pages = analysis.page_of(c.slices[chosen], page)
        items = slice_items(prefix, run, found.probs, shown) or [html.P("No image in this slice.", className="hint")]
        return (items, SLICES[chosen][0], f"{len(c.slices[chosen]):,}", f"{page + 1} / {pages}", chosen, page)

    clicks.relay(app, {"type": SLICE, "slice": ALL}, SLICE_CLICK)

    @app.callback(Output("hv-download", "data"), Output("hv-export-note", "children"),
                  Input("hv-export", "n_clicks"), State("run-select", "value"), State("hv-selection", "data"),
                  prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def export_slice(_clicks, run_name, chosen):
        """The chosen slice, every page of it, as CSV."""
        if chosen is None:
            raise inputs.BadInput("choose a slice first")
        chosen = inputs.one_of(chosen, SLICES, "slice")
        run = inputs.run_of(store, run_name)
        c, found = _compared(store, run)
        return export.download(slice_frame(run, found.probs, c.slices[chosen]),
                               export.filename(run.name, "humans", chosen)), ""
