"""Humans vs model page: people's label distributions (e.g. CIFAR-10H) beside the model's outputs.

Needs an annotator file that fits the run's test set (:mod:`xai_dashboard.human_labels`); without
one the page says where it looked, and a refused file is named with the reason. The numbers come
from :mod:`xai_dashboard.human_analysis` (memoised per run and file); points of the entropy scatter
and thumbnails of the slice galleries open the image in the errors view's detail panel.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from dash import ALL, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from .. import analysis, figures, inputs
from ..human_analysis import SLICES, Comparison, comparison
from ..human_labels import BESIDE_DATA, HUMAN_LABELS_ENV, annotations
from . import gallery_item
from .labels import open_in_detail

TITLE = "Humans vs model"
TAB = __name__.rpartition(".")[2]
ITEM, SLICE = "hv-item", "hv-slice"  # pattern-matching id types
_GRAPH = figures.GRAPH_CONFIG
_BLANK = figures.placeholder(300)


def layout(store) -> html.Div:
    return html.Div(className="view humans-view", children=[
        dcc.Store(id="hv-selection", data=None),
        dcc.Store(id="hv-page", data=0),
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


def register_callbacks(app, store) -> None:
    prefix = app.config.requests_pathname_prefix

    @app.callback(Output("hv-status", "children"), Output("hv-matrices", "figure"),
                  Output("hv-correlation", "children"), Output("hv-scatter", "figure"),
                  Output("hv-calibration", "children"), Output("hv-slices", "children"),
                  Input("run-select", "value"), Input("view-tabs", "value"))
    @inputs.guarded(inputs.hint, inputs.figure, inputs.constant(""), inputs.figure, inputs.constant([]),
                    inputs.constant([]))
    def update(run_name, tab):
        inputs.shown(tab, TAB)
        run = inputs.run_of(store, run_name)
        c, found = _compared(store, run)
        matrices, scatter = _figures(analysis.predictions_of(run), found, tuple(run.class_names))
        r = c.correlation
        said = (f"Off-diagonal patterns ({r['cells']} cells): Pearson r = {r['pearson']:.3f}, Spearman ρ = "
                f"{r['spearman']:.3f}. People's matrix: every annotation, each image weighted equally.")
        status = html.P(f"People's labels from {found.source}.", className="hint")
        return status, matrices, said, scatter, calibration_table(c.calibration), slice_buttons(c)

    @app.callback(Output("hv-gallery", "children"), Output("hv-gallery-title", "children"),
                  Output("hv-count", "children"), Output("hv-page-label", "children"),
                  Output("hv-selection", "data"), Output("hv-page", "data"),
                  Input({"type": SLICE, "slice": ALL}, "n_clicks"), Input("hv-prev", "n_clicks"),
                  Input("hv-next", "n_clicks"), Input("run-select", "value"), Input("view-tabs", "value"),
                  State("hv-selection", "data"), State("hv-page", "data"))
    @inputs.guarded(inputs.hint, inputs.constant("Choose a slice"), inputs.constant("0"), inputs.constant("1 / 1"),
                    inputs.constant(None), inputs.constant(0))
    def slice_gallery(_clicks, _prev, _next, run_name, tab, chosen, page):
        inputs.shown(tab, TAB)
        trigger, page = ctx.triggered_id, inputs.page(page)
        if isinstance(trigger, dict):
            if not (ctx.triggered and ctx.triggered[0]["value"]):
                raise PreventUpdate  # slice buttons drawn anew fire with n_clicks 0
            chosen, page = trigger.get("slice"), 0
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

    open_in_detail(app, Input({"type": ITEM, "index": ALL}, "n_clicks"))
    open_in_detail(app, Input("hv-scatter", "clickData"))
