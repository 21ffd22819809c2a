"""Errors page: confusion matrix -> gallery of a cell's images -> image detail.

Per-user state lives in the page: ``gallery-selection`` (which cells, for
which run), ``gallery-page`` and ``selected-image`` (read by the explanations
view, which fills ``detail-explain``). The click-to-gallery path is a single
callback so a cell click costs one round trip.
"""
from __future__ import annotations

from dash import ALL, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from .. import analysis, figures, summaries
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


def parse_cells(key: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in part.split("-")) for part in key.split(",") if part]


def cell_from_click(click: dict | None, class_names: list[str]) -> tuple[int, int] | None:
    """``(true, predicted)`` from a heatmap ``clickData`` (y = true name, x = predicted name)."""
    if not click or not click.get("points"):
        return None
    pt = click["points"][0]
    try:
        return class_names.index(str(pt["y"])), class_names.index(str(pt["x"]))
    except (KeyError, ValueError):
        number = pt.get("pointNumber")  # [row, col] when names are unavailable
        return (int(number[0]), int(number[1])) if isinstance(number, (list, tuple)) else None


def next_state(trigger, *, click_cell, pair_key, run: str, selection: dict | None, page: int) -> tuple[dict, int]:
    """Pure transition of (selection, page) for whatever fired the gallery callback.

    ``selection`` is ``{"run": name, "cells": [[t, p], ...] | None}`` (None = every mistake).
    """
    if selection is None or selection.get("run") != run or trigger == "run-select":
        selection, page = {"run": run, "cells": None}, 0
    if trigger == "confusion-matrix" and click_cell is not None:
        return {"run": run, "cells": [list(click_cell)]}, 0
    if trigger == "pair" and pair_key:
        return {"run": run, "cells": [list(c) for c in parse_cells(pair_key)]}, 0
    if trigger == "gallery-sort":
        return selection, 0
    if trigger == "gallery-prev":
        return selection, max(page - 1, 0)
    if trigger == "gallery-next":
        return selection, page + 1
    return selection, page


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
    def update_matrix(run_name, mode, tab):
        if tab != TAB:
            raise PreventUpdate
        run = store.get(run_name)
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
    def update_gallery(click, _pairs, run_name, sort_by, _prev, _next, tab, selection, page):
        if tab != TAB:
            raise PreventUpdate
        trigger, pair_key = ctx.triggered_id, None
        if isinstance(trigger, dict):
            # New pair buttons (after a run switch) fire this with n_clicks 0: not a click.
            if not ctx.triggered or not ctx.triggered[0]["value"]:
                raise PreventUpdate
            trigger, pair_key = "pair", trigger["cells"]
        run = store.get(run_name)
        selection, page = next_state(trigger, click_cell=cell_from_click(click, run.class_names),
                                     pair_key=pair_key, run=run.name, selection=selection, page=page or 0)
        cells = None if selection["cells"] is None else tuple(tuple(c) for c in selection["cells"])
        ordered = analysis.sorted_selection(analysis.predictions_of(run), cells, sort_by or "confidence")
        shown, page, pages = analysis.page_of(ordered, page)
        items = prediction_items(prefix, run, shown) or [html.P("No images in this cell.", className="hint")]
        return (items, str(len(ordered)), selection_title(cells, run.class_names), selection, page,
                f"{page + 1} / {pages}")

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
    def show_detail(selected):
        if not selected:
            return "image-detail empty", "", [], _BLANK
        try:
            run = store.get(selected["run"])
        except KeyError:
            raise PreventUpdate
        i = int(selected["index"])
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
