"""Embedding map: the test set's penultimate-layer embeddings in 2-D (PCA at once, UMAP once
``precompute embeddings`` ran), coloured by class, correctness, confidence, label-issue score or human
entropy; hover shows the thumbnail, a box or lasso selection fills the gallery below, a click shows the
image and its nearest training examples, and the errors view's selected confusion cell is ringed.

Per-user state lives in the page: ``emb-selection`` (``{"run", "indices"}``: the selected points,
reduced from plotly's selectedData in the browser so a 10,000-point lasso posts only numbers),
``emb-page``, ``emb-chosen`` (``{"run", "index"}``) and ``emb-hover`` (what the tooltip needs).
The confusion cell is read from the errors view's ``gallery-selection`` store.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from dash import ALL, Input, Output, State, ctx, dcc, html
from plotly.colors import qualitative

from .. import analysis, figures, inputs
from ..embedding_space import PROJECTIONS, map_coordinates
from ..images import DETAIL_SIZE, THUMB_SIZE, image_url
from . import neighbours, prediction_items
from .explain import register_job_button

TITLE = "Embedding map"
TAB = __name__.rpartition(".")[2]
COLOURS = {"true": "true class", "pred": "predicted class", "correct": "correct / wrong", "confidence": "confidence",
           "label_issue": "label-issue score (cleanlab; low = suspicious)", "human_entropy": "human entropy (bits)"}
HEIGHT = 560
_PROMPT = "Draw a box or a lasso on the map to list its images here."


def layout(store) -> html.Div:
    return html.Div(className="view embedding-map-view", children=[
        dcc.Store(id="emb-selection"), dcc.Store(id="emb-page", data=0), dcc.Store(id="emb-chosen"),
        dcc.Store(id="emb-hover"),
        html.Div(className="card", children=[
            html.Div(className="toolbar", children=[
                html.H3("Embedding map"),
                dcc.RadioItems(id="emb-projection", value="umap", inline=True, className="radio",
                               options=[{"label": v, "value": k} for k, v in PROJECTIONS.items()]),
                dcc.Dropdown(id="emb-colour", value="true", clearable=False, searchable=False, style={"width": "300px"},
                             options=[{"label": f"colour: {v}", "value": k} for k, v in COLOURS.items()]),
            ]),
            html.Div(id="emb-note", className="hint", role="status"),
            dcc.Graph(id="emb-map", figure=figures.placeholder(HEIGHT), clear_on_unhover=True,
                      config={**figures.GRAPH_CONFIG, "scrollZoom": True}),
            dcc.Tooltip(id="emb-tooltip", children=[
                html.Img(id="emb-hover-img", width=THUMB_SIZE, height=THUMB_SIZE, alt=""),
                html.Div(id="emb-hover-caption", className="caption")]),
            html.Div(children=[
                html.Button("Compute UMAP and training embeddings", id="emb-precompute", n_clicks=0),
                html.Progress(id="emb-precompute-progress", value="0", max="100",
                              style={"width": "240px", "marginLeft": "12px", "verticalAlign": "middle"}),
                html.Span(id="emb-precompute-status", className="hint", style={"marginLeft": "10px"}),
                dcc.Interval(id="emb-precompute-poll", interval=1000, disabled=True),
            ]),
        ]),
        html.Div(className="row", children=[
            html.Div(className="card gallery-card", style={"flex": "3 1 560px"}, children=[
                html.Div(className="toolbar", children=[
                    html.H3("Selected on the map"),
                    html.Span([html.Span("0", id="emb-count"), " images"], className="count"),
                    html.Div(className="pager", children=[
                        html.Button("‹ Prev", id="emb-prev", n_clicks=0),
                        html.Span(id="emb-page-label", children="1 / 1"),
                        html.Button("Next ›", id="emb-next", n_clicks=0)]),
                ]),
                html.Div(id="emb-gallery", className="gallery", children=html.P(_PROMPT, className="hint")),
            ]),
            html.Div(className="card", style={"flex": "1 1 300px"}, children=[
                html.Div(id="emb-detail", children=html.P("Click a point (or a thumbnail) to inspect it.",
                                                          className="hint")),
                neighbours.panel("emb-neighbours"),
            ]),
        ]),
    ])


def colour_values(run, by: str, data_dir=None) -> tuple[np.ndarray | None, str]:
    """``(values (N,), "")`` to colour the test points by: class indices for "true"/"pred", bools for
    "correct", floats otherwise; ``(None, why)`` when the run has none (no annotator file)."""
    if by == "true":
        return run.labels, ""
    if by == "pred":
        return run.preds, ""
    if by == "correct":
        return run.labels == run.preds, ""
    if by == "confidence":
        return run.probs.max(1), ""
    if by == "label_issue":
        from ..label_issues import label_quality

        return label_quality(run), ""
    from ..human_labels import human_entropy

    try:
        values = human_entropy(run, data_dir)
    except ValueError as e:  # a malformed annotator file: its reason, in words
        return None, str(e)
    return values, "" if values is not None else "no annotator distribution (e.g. CIFAR-10H) for this test set"


def _points(name: str, xy: np.ndarray, idx: np.ndarray, marker: dict) -> go.Scattergl:
    # customdata as a list: dcc.Graph copies a point's customdata from the trace's own data into hover
    # and selection events, which a base64-packed array would not give it
    return go.Scattergl(x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=name, customdata=idx.tolist(),
                        marker=marker, hoverinfo="none")


def map_figure(xy: np.ndarray, by: str, values: np.ndarray, class_names: list[str],
               highlight: np.ndarray | None = None, highlight_name: str = "") -> go.Figure:
    """Scattergl of the test points ``xy`` ``(N, 2)`` coloured by ``values`` ``(N,)`` (:func:`colour_values`):
    one trace per class (or correct / wrong) for categories, one with a colour bar otherwise; the test
    index of each point is its customdata. ``highlight`` indices are ringed in a last trace."""
    palette = qualitative.Plotly if len(class_names) <= 10 else qualitative.Alphabet
    if by in ("true", "pred"):
        traces = [_points(name, xy, np.flatnonzero(values == c), {"size": 4, "color": palette[c % len(palette)]})
                  for c, name in enumerate(class_names)]
    elif by == "correct":
        traces = [_points("correct", xy, np.flatnonzero(values), {"size": 4, "color": "#9fb3c8"}),
                  _points("wrong", xy, np.flatnonzero(~values), {"size": 5, "color": "#c0392b"})]
    else:
        order = np.argsort(values, kind="stable")[::-1]  # low values (the interesting ones) drawn last, on top
        traces = [_points(COLOURS[by], xy, order, {"size": 4, "color": values[order], "colorscale": "Viridis",
                                                    "colorbar": {"title": {"text": by.replace("_", " ")}}})]
    if highlight is not None:
        traces.append(_points(highlight_name, xy, highlight,
                              {"size": 10, "symbol": "circle-open", "color": "#111", "line": {"width": 2}}))
    fig = go.Figure(traces)
    fig.update_layout(height=HEIGHT, margin=dict(l=10, r=10, t=10, b=10), dragmode="lasso", hovermode="closest",
                      plot_bgcolor="#fff", legend=dict(itemsizing="constant"),
                      xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"))
    return fig


def _highlight(run, selection) -> tuple[np.ndarray | None, str]:
    """The test indices of the confusion cells selected in the errors view (``gallery-selection``), if any."""
    chosen = inputs.lenient(lambda v: inputs.gallery_selection(v, run), selection, None)
    if not chosen or chosen["cells"] is None:
        return None, ""
    names = run.class_names
    keep = np.zeros(len(run.labels), bool)
    for t, p in chosen["cells"]:
        keep |= (run.labels == t) & (run.preds == p)
    words = " and ".join(f"true {names[t]} → predicted {names[p]}" for t, p in chosen["cells"])
    return np.flatnonzero(keep), f"{words} ({int(keep.sum())})"


# In the browser: hovering fetches only the thumbnail; a selection is reduced to its test indices.
_HOVER_JS = """
function (hover, meta) {
    const none = [false, window.dash_clientside.no_update, "", ""];
    if (!hover || !meta || !hover.points || !hover.points.length) { return none; }
    const pt = hover.points[0], i = pt.customdata;
    if (typeof i !== "number") { return none; }
    const t = meta.labels[i], p = meta.preds[i];
    const caption = "#" + i + ": " + meta.names[t] + (t === p ? " ✓" : " → " + meta.names[p]);
    return [true, pt.bbox, meta.base + i + meta.suffix, caption];
}
"""
_SELECT_JS = """
function (selected, run) {
    if (!selected || !selected.points) { return null; }
    const seen = new Set(selected.points.map(p => p.customdata).filter(i => typeof i === "number"));
    return {run: run, indices: Array.from(seen)};
}
"""
_CHOOSE_JS = """
function (click, items, run) {
    const dc = window.dash_clientside, trig = dc.callback_context.triggered || [];
    if (trig.length !== 1 || !trig[0].value) { return dc.no_update; }
    const pid = trig[0].prop_id;
    if (pid.startsWith("emb-map.")) {
        const i = click && click.points && click.points[0] && click.points[0].customdata;
        return typeof i === "number" ? {run: run, index: i} : dc.no_update;
    }
    return {run: run, index: JSON.parse(pid.slice(0, pid.lastIndexOf("."))).index};
}
"""


def register_callbacks(app, store) -> None:
    prefix = app.config.requests_pathname_prefix

    @app.callback(Output("emb-map", "figure"), Output("emb-note", "children"), Output("emb-hover", "data"),
                  Input("run-select", "value"), Input("emb-projection", "value"), Input("emb-colour", "value"),
                  Input("view-tabs", "value"), Input("gallery-selection", "data"),
                  Input("emb-precompute-poll", "disabled"))  # the job ended: its UMAP may be there now
    @inputs.guarded(inputs.figure, inputs.hint, inputs.constant(None))
    def draw(run_name, projection, colour, tab, selection, _job):
        inputs.shown(tab, TAB)
        run = inputs.run_of(store, run_name)
        projection = inputs.one_of(projection, PROJECTIONS, "projection")
        colour = inputs.one_of(colour, COLOURS, "colouring")
        xy, why = map_coordinates(run, projection)
        notes = []
        if xy is None:  # no UMAP yet: the PCA, and why
            xy, _ = map_coordinates(run, "pca")
            notes.append(f"UMAP not computed ({why}); showing PCA.")
        values, why = colour_values(run, colour, store.data_dir)
        if values is None:
            notes.append(f"Cannot colour by {COLOURS[colour]}: {why}; coloured by true class.")
            colour, values = "true", run.labels
        highlight, words = _highlight(run, selection)
        if highlight is not None:
            notes.append(f"Ringed: the confusion cell selected in the errors view, {words}.")
        fig = map_figure(xy, colour, values, run.class_names, highlight, words)
        fig.update_layout(uirevision=f"{run.name}/{projection}")  # colouring keeps the zoom
        base = image_url(prefix, run.name, 0, THUMB_SIZE, run.meta["dataset"]["fingerprint"])
        hover = {"base": base.split("/0.png?")[0] + "/", "suffix": ".png?" + base.split(".png?")[1],
                 "names": run.class_names, "labels": run.labels.tolist(), "preds": run.preds.tolist()}
        return fig, " ".join(notes), hover

    app.clientside_callback(_HOVER_JS, Output("emb-tooltip", "show"), Output("emb-tooltip", "bbox"),
                            Output("emb-hover-img", "src"), Output("emb-hover-caption", "children"),
                            Input("emb-map", "hoverData"), State("emb-hover", "data"))
    app.clientside_callback(_SELECT_JS, Output("emb-selection", "data"), Input("emb-map", "selectedData"),
                            State("run-select", "value"), prevent_initial_call=True)
    app.clientside_callback(_CHOOSE_JS, Output("emb-chosen", "data"), Input("emb-map", "clickData"),
                            Input({"type": "emb-item", "index": ALL}, "n_clicks"), State("run-select", "value"),
                            prevent_initial_call=True)

    @app.callback(Output("emb-gallery", "children"), Output("emb-count", "children"),
                  Output("emb-page-label", "children"), Output("emb-page", "data"),
                  Input("emb-selection", "data"), Input("emb-prev", "n_clicks"), Input("emb-next", "n_clicks"),
                  Input("run-select", "value"), State("emb-page", "data"))
    @inputs.guarded(inputs.hint, inputs.constant("0"), inputs.constant("1 / 1"), inputs.constant(0))
    def gallery(selection, _prev, _next, run_name, page):
        run, page = inputs.run_of(store, run_name), inputs.page(page)
        chosen = inputs.map_selection(selection, run)
        if chosen is None:
            return html.P(_PROMPT, className="hint"), "0", "1 / 1", 0
        step = {"emb-prev": -1, "emb-next": 1}.get(ctx.triggered_id, None)
        page = 0 if step is None else page + step
        shown, page, pages = analysis.page_of(np.asarray(chosen, dtype=np.int64), page)
        items = [html.Div(item, id={"type": "emb-item", "index": int(i)}, n_clicks=0, style={"display": "contents"})
                 for i, item in zip(shown.tolist(), prediction_items(prefix, run, shown, clickable=False))]
        return items or html.P("No points in this selection.", className="hint"), f"{len(chosen):,}", \
            f"{page + 1} / {pages}", page

    @app.callback(Output("emb-detail", "children"), Input("emb-chosen", "data"))
    @inputs.guarded(inputs.hint)
    def detail(chosen):
        chosen = inputs.selected_image(store, chosen)
        if chosen is None:
            return html.P("Click a point (or a thumbnail) to inspect it.", className="hint")
        run, i = chosen
        names, t, p = run.class_names, int(run.labels[i]), int(run.preds[i])
        return [html.Img(src=image_url(prefix, run.name, i, DETAIL_SIZE // 2, run.meta["dataset"]["fingerprint"]),
                         width=DETAIL_SIZE // 2, height=DETAIL_SIZE // 2, alt=f"test image {i}"),
                html.P(f"Test image #{i}: true {names[t]}, predicted {names[p]} ({run.probs[i, p]:.1%})",
                       className="detail-caption")]

    register_job_button(app, store, "embeddings", "emb-precompute", "emb-precompute")
    neighbours.register_callbacks(app, store)
