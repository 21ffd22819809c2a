"""Embedding map: the test set's penultimate-layer embeddings in 2-D (PCA at once, UMAP once
``precompute embeddings`` ran), coloured by class, correctness, confidence, label-issue score or human
entropy; hover shows the thumbnail, a box or lasso selection fills the gallery below (and downloads as
CSV), a click shows the image and its nearest training examples, and the errors view's selected
confusion cell is ringed.

Per-user state lives in the page: ``emb-selection`` (``{"run", "indices"}``: the selected points,
reduced from plotly's selectedData in the browser so a 10,000-point lasso posts only numbers),
``emb-page``, ``emb-chosen`` (``{"run", "index"}``), ``emb-hover`` (what the tooltip needs) and
``emb-drawn`` (``{"run", "projection", "colour", "ring"}`` of the figure in the page). The confusion cell
is read from the errors view's ``gallery-selection`` store when the tab opens (a hidden map computes nothing).

What is sent, and when: the figure (float32 coordinates, base64; the test index of each point as
customdata; no per-point hover text: the tooltip builds a thumbnail URL from the index) only when the
run, projection or colouring differs from the one the page holds, not on every return to the tab, and
built once per map and colouring (:func:`cached_figure`); a confusion cell chosen since the last visit
replaces only the ringed trace (a ``Patch``). The points are WebGL (scattergl),
which needs the vendored strict plotly.js (:mod:`xai_dashboard.vendor`).
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from dash import ALL, Input, Output, Patch, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate
from plotly.colors import qualitative

from .. import analysis, export, figures, inputs
from ..cache import explain_cache
from ..embedding_space import PROJECTIONS, map_coordinates
from ..images import DETAIL_SIZE, THUMB_SIZE, test_image_url
from . import neighbours, prediction_items
from .job_button import register_job_button
from .opened import opened_id, when_opened

TITLE = "Embedding map"
TAB = __name__.rpartition(".")[2]
COLOURS = {"true": "true class", "pred": "predicted class", "correct": "correct / wrong", "confidence": "confidence",
           "label_issue": "label-issue score (cleanlab; low = suspicious)", "human_entropy": "human entropy (bits)"}
HEIGHT = 560
_PROMPT = "Draw a box or a lasso on the map to list its images here."
_RING = {"size": 10, "symbol": "circle-open", "color": "#111", "line": {"width": 2}}
FIGURE_FORMAT = 1  # part of the cached figures' key (cached_figure): bump it when map_figure draws differently


def layout(store) -> html.Div:
    return html.Div(className="view embedding-map-view", children=[
        dcc.Store(id="emb-selection"), dcc.Store(id="emb-page", data=0), dcc.Store(id="emb-chosen"),
        dcc.Store(id="emb-hover"), dcc.Store(id="emb-drawn"),
        html.Div(className="card", children=[
            html.Div(className="toolbar", children=[
                html.H3("Embedding map"),
                dcc.RadioItems(id="emb-projection", value="umap", inline=True, className="radio",
                               options=[{"label": v, "value": k} for k, v in PROJECTIONS.items()]),
                dcc.Dropdown(id="emb-colour", value="true", clearable=False, searchable=False, style={"width": "300px"},
                             options=[{"label": f"colour: {v}", "value": k} for k, v in COLOURS.items()]),
            ]),
            html.Div(id="emb-note", className="hint", role="status"),
            html.Div(id="emb-ring", className="hint", role="status"),
            dcc.Graph(id="emb-map", figure=figures.placeholder(HEIGHT), clear_on_unhover=True,
                      config=figures.SELECT_CONFIG),
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
                    html.Button("Download CSV", id="emb-export", n_clicks=0, className="export",
                                title="every image of this selection, in the gallery's order"),
                    html.Span(id="emb-export-note"),
                    dcc.Download(id="emb-download"),
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
    # x, y: float32, sent base64 (4 bytes a coordinate, more than a screen resolves). customdata as a list:
    # dcc.Graph copies a point's customdata from the trace's own data into hover and selection events,
    # which a base64-packed array would not give it. hoverinfo "none": no hover text per point, the
    # tooltip is built in the browser from the index (_HOVER_JS)
    xy = np.asarray(xy, dtype=np.float32)
    return go.Scattergl(x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=name, customdata=idx.tolist(),
                        marker=marker, hoverinfo="none", showlegend=bool(len(idx)))


def ring_trace(xy: np.ndarray, highlight: np.ndarray | None, name: str) -> go.Scattergl:
    """The ringed points ``highlight`` (test indices; None: none), always the figure's last trace."""
    return _points(name or "ringed", xy, np.empty(0, np.int64) if highlight is None else highlight, _RING)


def map_figure(xy: np.ndarray, by: str, values: np.ndarray, class_names: list[str],
               highlight: np.ndarray | None = None, highlight_name: str = "") -> go.Figure:
    """Scattergl of the test points ``xy`` ``(N, 2)`` coloured by ``values`` ``(N,)`` (:func:`colour_values`):
    one trace per class (or correct / wrong) for categories, one with a colour bar otherwise; the test
    index of each point is its customdata. The last trace rings the ``highlight`` indices (empty if None)."""
    palette = qualitative.Plotly if len(class_names) <= 10 else qualitative.Alphabet
    if by in ("true", "pred"):
        traces = [_points(name, xy, np.flatnonzero(values == c), {"size": 4, "color": palette[c % len(palette)]})
                  for c, name in enumerate(class_names)]
    elif by == "correct":
        traces = [_points("correct", xy, np.flatnonzero(values), {"size": 4, "color": "#9fb3c8"}),
                  _points("wrong", xy, np.flatnonzero(~values), {"size": 5, "color": "#c0392b"})]
    else:
        order = np.argsort(values, kind="stable")[::-1]  # low values (the interesting ones) drawn last, on top
        traces = [_points(COLOURS[by], xy, order, {"size": 4, "color": values[order].astype(np.float32),
                                                    "colorscale": "Viridis",
                                                    "colorbar": {"title": {"text": by.replace("_", " ")}}})]
    fig = go.Figure(traces + [ring_trace(xy, highlight, highlight_name)])
    fig.update_layout(height=HEIGHT, margin=dict(l=10, r=10, t=figures.MODEBAR, b=10), dragmode="lasso",
                      hovermode="closest", plot_bgcolor="#fff", legend=dict(itemsizing="constant"),
                      xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"))
    return fig


def cached_figure(xy: np.ndarray, by: str, values: np.ndarray, class_names: list[str]) -> dict:
    """:func:`map_figure` with no ring, as the plain dict Dash sends (x, y base64 float32), from the app's
    diskcache (:func:`..cache.explain_cache`): building and validating eleven 10,000-point plotly traces
    took 110 ms of a loaded server for every fresh page, serialising them once more 20 ms; reading the
    cached text back takes a few. Keyed by a digest of what the figure is drawn from, so a recomputed
    UMAP, another run or another colouring never reads an old one."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (np.asarray(xy, dtype=np.float32), np.asarray(values)):
        digest.update(np.ascontiguousarray(part).tobytes())
    digest.update(json.dumps([FIGURE_FORMAT, by, np.asarray(values).dtype.str, list(class_names)]).encode())
    cache, key = explain_cache(), f"embedding-map/{digest.hexdigest()}"
    text = cache.get(key)
    if text is None:
        text = map_figure(xy, by, values, class_names).to_json()
        cache.set(key, text)
    return json.loads(text)


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


def _ring_note(words: str) -> str:
    return f"Ringed: the confusion cell selected in the errors view, {words}." if words else ""


def selection_frame(run, indices) -> pd.DataFrame:
    """The CSV of a map selection: its images in the gallery's order (ascending test index) with the
    errors gallery's columns (:data:`.export.GALLERY_COLUMNS`: the image columns, then loss and margin)."""
    idx = np.asarray(indices, dtype=np.int64)
    frame = export.image_frame(run, idx)
    frame["loss"] = analysis.loss(run.probs[idx], run.labels[idx])
    frame["margin"] = analysis.margin(run.probs[idx])
    return frame


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
    _register_map(app, store, prefix)
    _register_in_browser(app)
    _register_selection(app, store, prefix)
    _register_detail(app, store, prefix)
    register_job_button(app, store, "embeddings", "emb-precompute", "emb-precompute")
    neighbours.register_callbacks(app, store)


def _register_map(app, store, prefix: str) -> None:
    """The map, drawn when it differs from the one the page holds, with the errors view's cell ringed. The cell
    is read, not listened to, when the tab opens: a hidden map computes nothing (:mod:`.opened`)."""
    @app.callback(Output("emb-map", "figure"), Output("emb-note", "children"), Output("emb-ring", "children"),
                  Output("emb-hover", "data"), Output("emb-drawn", "data"),
                  Input("run-select", "value"), Input("emb-projection", "value"), Input("emb-colour", "value"),
                  *when_opened(TAB),
                  Input("emb-precompute-poll", "disabled"),  # the job ended: its UMAP may be there now
                  State("gallery-selection", "data"), State("emb-drawn", "data"))
    @inputs.guarded(inputs.figure, inputs.hint, inputs.constant(""), inputs.constant(None), inputs.constant(None))
    def draw(run_name, projection, colour, _opened, tab, _job, selection, drawn):
        inputs.shown(tab, TAB)
        run = inputs.run_of(store, run_name)
        xy, projection, values, colour, notes = _drawn_from(store, run, projection, colour)
        highlight, words = _highlight(run, selection)
        now = {"run": run.name, "projection": projection, "colour": colour, "ring": words}  # after fallbacks
        if ctx.triggered_id == opened_id(TAB) and isinstance(drawn, dict):
            if drawn == now:
                raise PreventUpdate  # back on the tab: the page still holds this figure
            if {**drawn, "ring": words} == now:  # only the errors view's cell changed meanwhile
                patch = Patch()
                patch["data"][-1] = ring_trace(xy, highlight, words)
                return patch, no_update, _ring_note(words), no_update, now
        fig = cached_figure(xy, colour, values, run.class_names)
        if highlight is not None:
            fig["data"][-1] = ring_trace(xy, highlight, words)
        fig["layout"]["uirevision"] = f"{run.name}/{projection}"  # colouring keeps the zoom
        base, query = test_image_url(prefix, run, 0, THUMB_SIZE).split("?")  # ".../0.jpg", "size=..&v=.."
        folder, _, name = base.rpartition("/")
        hover = {"base": folder + "/", "suffix": name.removeprefix("0") + "?" + query,
                 "names": run.class_names, "labels": run.labels.tolist(), "preds": run.preds.tolist()}
        return fig, " ".join(notes), _ring_note(words), hover, now


def _drawn_from(store, run, projection, colour) -> tuple[np.ndarray, str, np.ndarray, str, list[str]]:
    """``(xy (N, 2), projection, colour values (N,), colouring, notes)`` of the map asked for, after the
    fallbacks: the PCA while no UMAP is computed, the true class when a colouring cannot be had."""
    projection = inputs.one_of(projection, PROJECTIONS, "projection")
    colour = inputs.one_of(colour, COLOURS, "colouring")
    xy, why = map_coordinates(run, projection)
    notes = []
    if xy is None:
        projection, (xy, _) = "pca", map_coordinates(run, "pca")
        notes.append(f"UMAP not computed ({why}); showing PCA.")
    values, why = colour_values(run, colour, store.data_dir)
    if values is None:
        notes.append(f"Cannot colour by {COLOURS[colour]}: {why}; coloured by true class.")
        colour, values = "true", run.labels
    return xy, projection, values, colour, notes


def _register_in_browser(app) -> None:
    """The tooltip on hover, the selection reduced to test indices, the point or thumbnail chosen: no request."""
    app.clientside_callback(_HOVER_JS, Output("emb-tooltip", "show"), Output("emb-tooltip", "bbox"),
                            Output("emb-hover-img", "src"), Output("emb-hover-caption", "children"),
                            Input("emb-map", "hoverData"), State("emb-hover", "data"))
    app.clientside_callback(_SELECT_JS, Output("emb-selection", "data"), Input("emb-map", "selectedData"),
                            State("run-select", "value"), prevent_initial_call=True)
    app.clientside_callback(_CHOOSE_JS, Output("emb-chosen", "data"), Input("emb-map", "clickData"),
                            Input({"type": "emb-item", "index": ALL}, "n_clicks"), State("run-select", "value"),
                            prevent_initial_call=True)


def _register_selection(app, store, prefix: str) -> None:
    """The gallery of the points a box or lasso selected, paged, and its CSV."""
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

    @app.callback(Output("emb-download", "data"), Output("emb-export-note", "children"),
                  Input("emb-export", "n_clicks"), State("run-select", "value"), State("emb-selection", "data"),
                  prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def export_selection(_clicks, run_name, selection):
        """The whole selection (every page of the gallery) as CSV."""
        run = inputs.run_of(store, run_name)
        chosen = inputs.map_selection(selection, run)
        if not chosen:
            raise inputs.BadInput("select points on the map first")
        return export.download(selection_frame(run, chosen),
                               export.filename(run.name, "map-selection", f"{len(chosen)}-images")), ""


def _register_detail(app, store, prefix: str) -> None:
    @app.callback(Output("emb-detail", "children"), Input("emb-chosen", "data"))
    @inputs.guarded(inputs.hint)
    def detail(chosen):
        chosen = inputs.selected_image(store, chosen)
        if chosen is None:
            return html.P("Click a point (or a thumbnail) to inspect it.", className="hint")
        run, i = chosen
        names, t, p = run.class_names, int(run.labels[i]), int(run.preds[i])
        return [html.Img(src=test_image_url(prefix, run, i, DETAIL_SIZE // 2),
                         width=DETAIL_SIZE // 2, height=DETAIL_SIZE // 2, alt=f"test image {i}"),
                html.P(f"Test image #{i}: true {names[t]}, predicted {names[p]} ({run.probs[i, p]:.1%})",
                       className="detail-caption")]
