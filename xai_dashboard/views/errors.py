"""Errors page: confusion matrix -> gallery of a cell's images -> image detail.

Per-user state lives in the page: ``gallery-selection`` (which cells, for
which run), ``gallery-page`` and ``selected-image`` (read by the explanations
view, which fills ``detail-explain``). The click-to-gallery path is a single
callback so a cell click costs one round trip.
"""
from __future__ import annotations

from dash import ALL, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from .. import analysis, export, figures, inputs, summaries
from ..images import DETAIL_SIZE, image_url
from . import prediction_items

TITLE = "Confusion & gallery"
TAB = __name__.rpartition(".")[2]  # the tab's value: app.create_app names each tab after its module
_BLANK = figures.placeholder(260)


def layout(store) -> html.Div:
    return html.Div(className="view errors-view", children=[
        dcc.Store(id="gallery-selection", data=None),
        dcc.Store(id="gallery-page", data=0),
        dcc.Store(id="selected-image", data=None),
        html.Div(className="row", children=[
            html.Div(className="card cm-card", children=[
                html.Div(className="toolbar", children=[
                    dcc.RadioItems(id="cm-mode", value="counts", inline=True, className="radio",
                                   options=[{"label": "Counts", "value": "counts"},
                                            {"label": "Row-normalised", "value": "row"}]),
                ]),
                dcc.Graph(id="confusion-matrix", config={"displayModeBar": False}, clear_on_unhover=True),
                html.Div(className="pairs", children=[
                    html.H4("Most confused pairs"),
                    html.Div(id="confused-pairs"),
                ]),
            ]),
            html.Div(className="card detail-card", children=[
                html.Div(id="image-detail", className="image-detail empty", children=[
                    html.P("Click a thumbnail to inspect it.", id="detail-hint", className="hint"),
                    html.Div(className="detail-top", children=[
                        html.Img(id="detail-image", width=DETAIL_SIZE, height=DETAIL_SIZE, alt=""),
                        html.Div(id="detail-caption", className="detail-caption"),
                    ]),
                    dcc.Graph(id="detail-top5", config={"displayModeBar": False}, figure=_BLANK),
                    html.Div(id="detail-explain", className="detail-explain"),
                ]),
            ]),
        ]),
        html.Div(className="card gallery-card", children=[
            html.Div(className="toolbar", children=[
                html.H3(id="gallery-title", children="All mistakes"),
                html.Span([html.Span("0", id="gallery-count"), " images"], className="count"),
                dcc.Dropdown(id="gallery-sort", value="confidence", clearable=False, searchable=False,
                             options=[{"label": v, "value": k} for k, v in analysis.SORT_KEYS.items()],
                             className="sort"),
                html.Div(className="pager", children=[
                    html.Button("‹ Prev", id="gallery-prev", n_clicks=0),
                    html.Span(id="gallery-page-label", children="1 / 1"),
                    html.Button("Next ›", id="gallery-next", n_clicks=0),
                ]),
                html.Button("Download CSV", id="gallery-export", n_clicks=0, className="export",
                            title="every image of this selection, in this order"),
                html.Span(id="gallery-export-note"),
                dcc.Download(id="gallery-download"),
            ]),
            html.Div(id="gallery", className="gallery"),
        ]),
    ])


_SELECT_IMAGE_JS = """
function (clicks, run) {
    const dc = window.dash_clientside, trig = dc.callback_context.triggered || [];
    if (trig.some(t => t.prop_id === "run-select.value")) { return null; }
    // One trigger with a click count is a click; several, or a zero, are thumbnails being rendered.
    if (trig.length !== 1 || !trig[0].value) { return dc.no_update; }
    const pid = trig[0].prop_id;
    return {run: run, index: JSON.parse(pid.slice(0, pid.lastIndexOf("."))).index};
}
"""


def _cells_key(cells) -> str:
    return ",".join(f"{t}-{p}" for t, p in cells)


def next_state(trigger, *, click_cell, pair_cells, run: str, selection: dict | None, page: int) -> tuple[dict, int]:
    """Pure transition of (selection, page) for whatever fired the gallery callback.

    ``selection`` is ``{"run": name, "cells": [[t, p], ...] | None}`` (None = every mistake), already
    parsed for ``run`` (:func:`~xai_dashboard.inputs.gallery_selection`); ``pair_cells`` likewise.
    """
    if selection is None or trigger == "run-select":
        selection, page = {"run": run, "cells": None}, 0
    if trigger == "confusion-matrix" and click_cell is not None:
        return {"run": run, "cells": [list(click_cell)]}, 0
    if trigger == "pair":
        return {"run": run, "cells": [list(c) for c in pair_cells]}, 0
    if trigger == "gallery-sort":
        return selection, 0
    if trigger == "gallery-prev":
        return selection, max(page - 1, 0)
    if trigger == "gallery-next":
        return selection, page + 1
    return selection, page


def _cells_of(selection: dict | None) -> tuple[tuple[int, int], ...] | None:
    """The cells of a parsed selection as the hashable key ``analysis.sorted_selection`` caches on."""
    return None if selection is None or selection["cells"] is None else tuple(map(tuple, selection["cells"]))


def selection_title(cells, class_names: list[str]) -> str:
    if cells is None:
        return "All mistakes"
    return " and ".join(
        f"{class_names[t]} (correct)" if t == p else f"true {class_names[t]} → predicted {class_names[p]}"
        for t, p in cells
    )


def _pair_buttons(summary, class_names: list[str]) -> list:
    rows = []
    for a, b, total in summary.pairs:
        rows.append(html.Div(className="pair", children=[
            html.Button(f"{class_names[a]} ↔ {class_names[b]} · {total}", className="pair-both",
                        id={"type": "pair", "cells": _cells_key([(a, b), (b, a)])}, n_clicks=0),
            html.Button(f"{class_names[a]}→{class_names[b]} {summary.cm[a, b]}", className="pair-dir",
                        id={"type": "pair", "cells": _cells_key([(a, b)])}, n_clicks=0),
            html.Button(f"{class_names[b]}→{class_names[a]} {summary.cm[b, a]}", className="pair-dir",
                        id={"type": "pair", "cells": _cells_key([(b, a)])}, n_clicks=0),
        ]))
    return rows or [html.P("No mistakes at all.", className="hint")]


def register_callbacks(app, store) -> None:
    prefix = app.config.requests_pathname_prefix

    # The matrix and the gallery are gated on the active tab ("view-tabs" in app.py): every
    # tab's callbacks fire on page load, and a hidden heatmap plus 48 thumbnails would delay
    # the overview the user is looking at.
    @app.callback(Output("confusion-matrix", "figure"), Output("confused-pairs", "children"),
                  Input("run-select", "value"), Input("cm-mode", "value"), Input("view-tabs", "value"))
    @inputs.guarded(inputs.figure, inputs.hint)
    def update_matrix(run_name, mode, tab):
        inputs.shown(tab, TAB)
        run = inputs.run_of(store, run_name)
        mode = inputs.one_of(mode, ("counts", "row"), "matrix mode")
        s = summaries.summary_of(run)
        return figures.confusion_figure(s.cm, run.class_names, normalised=mode == "row"), \
            _pair_buttons(s, run.class_names)

    @app.callback(
        Output("gallery", "children"), Output("gallery-count", "children"), Output("gallery-title", "children"),
        Output("gallery-selection", "data"), Output("gallery-page", "data"), Output("gallery-page-label", "children"),
        Input("confusion-matrix", "clickData"), Input({"type": "pair", "cells": ALL}, "n_clicks"),
        Input("run-select", "value"), Input("gallery-sort", "value"),
        Input("gallery-prev", "n_clicks"), Input("gallery-next", "n_clicks"), Input("view-tabs", "value"),
        State("gallery-selection", "data"), State("gallery-page", "data"),
    )
    @inputs.guarded(inputs.hint, inputs.constant("0"), inputs.constant("Nothing to show"),
                    inputs.constant(None), inputs.constant(0), inputs.constant("1 / 1"))
    def update_gallery(click, _pairs, run_name, sort_by, _prev, _next, tab, selection, page):
        inputs.shown(tab, TAB)
        trigger, pair = ctx.triggered_id, None
        run = inputs.run_of(store, run_name)
        if isinstance(trigger, dict):
            # New pair buttons (after a run switch) fire this with n_clicks 0: not a click.
            if not (ctx.triggered and ctx.triggered[0]["value"]):
                raise PreventUpdate
            trigger, pair = "pair", inputs.pair_cells(trigger.get("cells"), len(run.class_names))
        selection, page = next_state(trigger, click_cell=inputs.clicked_cell(click, run.class_names), pair_cells=pair,
                                     run=run.name, selection=inputs.gallery_selection(selection, run),
                                     page=inputs.page(page))
        cells = _cells_of(selection)
        ordered = analysis.sorted_selection(analysis.predictions_of(run), cells, inputs.sort_key(sort_by))
        shown, page, pages = analysis.page_of(ordered, page)
        items = prediction_items(prefix, run, shown) or [html.P("No images in this cell.", className="hint")]
        return (items, str(len(ordered)), selection_title(cells, run.class_names), selection, page,
                f"{page + 1} / {pages}")

    @app.callback(Output("gallery-download", "data"), Output("gallery-export-note", "children"),
                  Input("gallery-export", "n_clicks"), State("run-select", "value"),
                  State("gallery-selection", "data"), State("gallery-sort", "value"), prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def export_gallery(_clicks, run_name, selection, sort_by):
        """The whole selection (every page), in the gallery's order, as CSV."""
        run = inputs.run_of(store, run_name)
        cells = _cells_of(inputs.gallery_selection(selection, run))
        frame = export.gallery_frame(run, cells, inputs.sort_key(sort_by))
        return export.download(frame, export.filename(run.name, export.selection_slug(cells, run.class_names))), ""

    # In the browser: a thumbnail click needs no server round trip, and the burst of
    # "new component" triggers each gallery page causes must not cost a request either.
    app.clientside_callback(
        _SELECT_IMAGE_JS, Output("selected-image", "data"),
        Input({"type": "gallery-item", "index": ALL}, "n_clicks"), Input("run-select", "value"),
        prevent_initial_call=True,
    )

    @app.callback(Output("image-detail", "className"), Output("detail-image", "src"),
                  Output("detail-caption", "children"), Output("detail-top5", "figure"),
                  Input("selected-image", "data"))
    @inputs.guarded(inputs.constant("image-detail"), inputs.constant(""), inputs.hint, inputs.constant(_BLANK))
    def show_detail(selected):
        chosen = inputs.selected_image(store, selected)
        if chosen is None:
            return "image-detail empty", "", [], _BLANK
        run, i = chosen
        names, t, p = run.class_names, int(run.labels[i]), int(run.preds[i])
        caption = html.Dl([
            html.Dt("Test image"), html.Dd(f"#{i}"),
            html.Dt("True label"), html.Dd(names[t], className="lbl-true"),
            html.Dt("Predicted"), html.Dd(names[p], className="lbl-pred " + ("wrong" if t != p else "right")),
            html.Dt("Confidence"), html.Dd(f"{run.probs[i, p]:.1%}"),
            html.Dt("p(true class)"), html.Dd(f"{run.probs[i, t]:.1%}"),
        ])
        src = image_url(prefix, run.name, i, DETAIL_SIZE, run.meta["dataset"]["fingerprint"])
        fig = figures.top_k_figure(analysis.top_k(run.probs[i], 5), names, t)
        return "image-detail", src, caption, fig
