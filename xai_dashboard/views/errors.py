"""Errors page: confusion matrix -> gallery of a cell's images -> image detail.

Per-user state lives in the page: ``gallery-selection`` (which cells, for
which run), ``gallery-page`` and ``selected-image`` (read by the explanations
view, which fills ``detail-explain``), mirrored in the address bar by
:mod:`..url_state` (which may set them: the gallery then takes them as they are).
The click-to-gallery path is a single callback so a cell click costs one round
trip; highlighting the cell and scrolling to the gallery happen in the browser
(``assets/browse.js``, which also moves between thumbnails with the keyboard).
"""
from __future__ import annotations

import numpy as np
from dash import ALL, ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from .. import analysis, corrected, export, figures, inputs
from ..images import DETAIL_SIZE, test_image_url
from . import clicks, neighbours, prediction_items
from .opened import when_opened

TITLE = "Confusion & gallery"
TAB = __name__.rpartition(".")[2]  # the tab's value: app.create_app names each tab after its module
PAIR_CLICK = "gallery-pair-click"
_BLANK = figures.placeholder(260)


def layout(store) -> html.Div:
    # The matrix and the gallery share the left column and the detail card sticks to the top of the
    # window in the right one: a clicked cell's images and a clicked thumbnail's detail are both in view.
    return html.Div(className="view errors-view", children=[
        dcc.Store(id="gallery-selection", data=None),
        dcc.Store(id="gallery-page", data=0),
        dcc.Store(id="selected-image", data=None),
        dcc.Store(id="errors-reveal"),
        clicks.store(PAIR_CLICK),  # pair-button clicks (:mod:`.clicks`: new buttons must not cancel the gallery)
        html.Div(className="row errors-row", children=[
            html.Div(className="errors-main", children=[
                html.Div(className="card cm-card", children=[
                    html.Div(className="toolbar", children=[
                        dcc.RadioItems(id="cm-mode", value="counts", inline=True, className="radio",
                                       options=[{"label": "Counts", "value": "counts"},
                                                {"label": "Row-normalised", "value": "row"}]),
                    ]),
                    dcc.Graph(id="confusion-matrix", config=figures.GRAPH_CONFIG, clear_on_unhover=True,
                              figure=figures.placeholder(480)),
                    html.Div(className="pairs", children=[
                        html.H4("Most confused pairs"),
                        html.Div(id="confused-pairs"),
                    ]),
                ]),
                _gallery_card(),
            ]),
            html.Div(className="card detail-card", children=[
                html.Div(id="image-detail", className="image-detail empty", children=[
                    html.P("Click a thumbnail to inspect it.", id="detail-hint", className="hint"),
                    html.Div(className="detail-top", children=[
                        html.Img(id="detail-image", width=DETAIL_SIZE, height=DETAIL_SIZE, alt=""),
                        html.Div(id="detail-caption", className="detail-caption"),
                    ]),
                    dcc.Graph(id="detail-top5", config=figures.GRAPH_CONFIG, figure=_BLANK),
                    html.Div(id="detail-explain", className="detail-explain"),
                    neighbours.panel("detail-neighbours"),
                ]),
            ]),
        ]),
    ])


def _gallery_card() -> html.Div:
    return html.Div(className="card gallery-card", children=[
        html.Div(className="toolbar", children=[
            html.H3(id="gallery-title", children="All mistakes"),
            html.Span([html.Span("0", id="gallery-count"), " images"], className="count"),
            dcc.Dropdown(id="gallery-sort", value="confidence", clearable=False, searchable=False,
                         options=sort_options(None), className="sort"),
            html.Div(className="pager", children=[
                html.Button("‹ Prev", id="gallery-prev", n_clicks=0),
                html.Span(id="gallery-page-label", children="1 / 1"),
                html.Button("Next ›", id="gallery-next", n_clicks=0),
            ]),
            html.Button("Download CSV", id="gallery-export", n_clicks=0, className="export",
                        title="every image of this selection in this confidence range, in this order"),
            html.Span(id="gallery-export-note"),
            dcc.Download(id="gallery-download"),
        ]),
        html.Div(className="toolbar gallery-browse", children=[
            html.Div(className="conf-range", title="top-1 probability of the images shown", children=[
                html.Span("Confidence", className="hint"),
                dcc.RangeSlider(id="gallery-conf", min=0, max=1, step=0.05, value=[0, 1],
                                marks={0: "0", 0.5: "0.5", 1: "1"}, tooltip={"placement": "bottom"})]),
            html.Label(className="pick", children=[
                "Jump to test image #", dcc.Input(id="gallery-jump", type="number", min=0, step=1, debounce=True,
                                                  placeholder="index", style={"width": "90px"})]),
            html.Span(id="gallery-note", className="hint", role="status"),
            html.Span("Keys: arrows move between thumbnails (and turn the page at either end), Enter opens one, "
                      "Page Up / Page Down turn the page", className="hint"),
        ]),
        html.Div(id="gallery", className="gallery"),
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
    if trigger in ("gallery-sort", "gallery-conf"):
        return selection, 0
    if trigger == "gallery-prev":
        return selection, max(page - 1, 0)
    if trigger == "gallery-next":
        return selection, page + 1
    return selection, page


def _cells_of(selection: dict | None) -> tuple[tuple[int, int], ...] | None:
    """The cells of a parsed selection as the hashable key ``analysis.sorted_selection`` caches on."""
    return None if selection is None or selection["cells"] is None else tuple(map(tuple, selection["cells"]))


def sort_options(cells) -> list[dict]:
    """The orders that make sense for a selection, its default (:func:`.analysis.default_sort`) first;
    correct predictions have no "highest loss" (their loss orders them least confident first too)."""
    if analysis.default_sort(cells) == "least":
        labels = {**analysis.SORT_KEYS, "confidence": "Most confident first"}
        return [{"label": labels[k], "value": k} for k in ("least", "margin", "confidence", "index")]
    return [{"label": analysis.SORT_KEYS[k], "value": k} for k in ("confidence", "loss", "margin", "least", "index")]


def _ordered(p, cells, sort_by: str, confidence: tuple[float, float]) -> np.ndarray:
    """The gallery's whole list: the selection in ``sort_by`` order, within the confidence range."""
    return analysis.within_confidence(analysis.sorted_selection(p, cells, sort_by), p.probs, *confidence)


def _changed(new, old):
    """``new``, or no_update when it equals ``old``: setting a store fires the callbacks reading it (the
    address, the embedding map's ring), which a reopened tab's unchanged selection must not."""
    return no_update if new == old else new


def _trigger(run, pair_click):
    """``(what fired the gallery callback, a pair button's cells)``: "restored" when the address set the
    selection or page (:mod:`..url_state`: taken as they are), "pair" for a pair button clicked
    (``pair_click``: :data:`PAIR_CLICK`'s data)."""
    if {"gallery-selection.data", "gallery-page.data"} & set(ctx.triggered_prop_ids):
        return "restored", None
    trigger = ctx.triggered_id
    if trigger == PAIR_CLICK:
        button = clicks.clicked(pair_click, "pair")
        if button is None:
            raise PreventUpdate
        return "pair", inputs.pair_cells(button.get("cells"), len(run.class_names))
    return trigger, None


def jump_to(i: int, p, run_name: str, selection: dict, ordered: np.ndarray, sort_by: str,
            confidence: tuple[float, float]) -> tuple[dict, str, np.ndarray, int, str]:
    """``(selection, sort, ordered list, page, note)`` showing test image ``i``: on its page of this
    selection, else in its own confusion cell (its default order); the note says when the
    confidence range hides it."""
    if not np.isin(i, ordered):
        selection = {"run": run_name, "cells": [[int(p.labels[i]), int(p.preds[i])]]}
        sort_by = sort_options(_cells_of(selection))[0]["value"]
        ordered = _ordered(p, _cells_of(selection), sort_by, confidence)
    at = np.flatnonzero(ordered == i)
    if len(at):
        return selection, sort_by, ordered, int(at[0]) // analysis.PAGE_SIZE, ""
    return selection, sort_by, ordered, 0, (f"#{i} (confidence {p.probs[i].max():.0%}) is outside the confidence "
                                            f"range {confidence[0]:g}–{confidence[1]:g}; its detail is shown")


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

    # The matrix and the gallery draw when their tab opens and compute nothing while it is hidden
    # (:mod:`.opened`): every tab's callbacks fire on page load, and a hidden heatmap plus 48
    # thumbnails would delay the overview the user is looking at.
    _register_matrix(app, store)
    _register_gallery(app, store, prefix)
    _register_in_browser(app)
    _register_detail(app, store, prefix)


def _register_matrix(app, store) -> None:
    """The confusion matrix and the most confused pairs' buttons."""
    @app.callback(Output("confusion-matrix", "figure"), Output("confused-pairs", "children"),
                  Input("run-select", "value"), Input("cm-mode", "value"), *when_opened(TAB),
                  Input(corrected.SWITCH, "value"), Input(corrected.STAMP, "data"))
    @inputs.guarded(inputs.figure, inputs.hint)
    def update_matrix(run_name, mode, _opened, tab, label_set, _reviews_saved):
        inputs.shown(tab, TAB)
        run = inputs.run_of(store, run_name)
        mode = inputs.one_of(mode, ("counts", "row"), "matrix mode")
        _, s, _ = corrected.scored(run, inputs.label_set(label_set))
        return figures.confusion_figure(s.cm, run.class_names, normalised=mode == "row"), \
            _pair_buttons(s, run.class_names)


def _register_gallery(app, store, prefix: str) -> None:
    """The gallery of the chosen cells (paged, sorted, within a confidence range) and its CSV."""
    @app.callback(
        Output("gallery", "children"), Output("gallery-count", "children"), Output("gallery-title", "children"),
        Output("gallery-selection", "data"), Output("gallery-page", "data"), Output("gallery-page-label", "children"),
        Output("gallery-sort", "options"), Output("gallery-sort", "value"),
        Output("selected-image", "data", allow_duplicate=True), Output("gallery-note", "children"),
        Input("confusion-matrix", "clickData"), Input(PAIR_CLICK, "data"),
        Input("run-select", "value"), Input("gallery-sort", "value"),
        Input("gallery-prev", "n_clicks"), Input("gallery-next", "n_clicks"), *when_opened(TAB),
        Input(corrected.SWITCH, "value"), Input(corrected.STAMP, "data"),
        Input("gallery-conf", "value"), Input("gallery-jump", "value"),
        Input("gallery-selection", "data"), Input("gallery-page", "data"),
        prevent_initial_call="initial_duplicate",
    )
    @inputs.guarded(inputs.hint, inputs.constant("0"), inputs.constant("Nothing to show"), inputs.constant(None),
                    inputs.constant(0), inputs.constant("1 / 1"), inputs.keep, inputs.keep, inputs.keep, inputs.hint)
    def update_gallery(click, pair_click, run_name, sort_in, _prev, _next, _opened, tab, label_set, _reviews_saved,
                       conf, jump, selection_in, page_in):
        inputs.shown(tab, TAB)
        run = inputs.run_of(store, run_name)
        trigger, pair = _trigger(run, pair_click)
        selection, page = next_state(trigger, click_cell=inputs.clicked_cell(click, run.class_names), pair_cells=pair,
                                     run=run.name, selection=inputs.gallery_selection(selection_in, run),
                                     page=inputs.page(page_in))
        cells, confidence = _cells_of(selection), inputs.confidence_range(conf)
        offered = [o["value"] for o in sort_options(cells)]
        new_cells = trigger in ("confusion-matrix", "pair", "run-select")  # a new selection: its own order
        sort_by = inputs.sort_key(sort_in)
        sort_by = offered[0] if new_cells or sort_by not in offered else sort_by
        p, _ = corrected.predictions_for(run, inputs.label_set(label_set))
        ordered, image, note = _ordered(p, cells, sort_by, confidence), None if new_cells else no_update, ""
        if trigger == "gallery-jump" and jump is not None:
            i = inputs.index(jump, len(run.labels))
            selection, sort_by, ordered, page, note = jump_to(i, p, run.name, selection, ordered, sort_by, confidence)
            image, cells = {"run": run.name, "index": i}, _cells_of(selection)
        shown, page, pages = analysis.page_of(ordered, page)
        items = prediction_items(prefix, run, shown, labels=p.labels) or [
            html.P("No images in this cell." if confidence == (0, 1) else "No images in this confidence range.",
                   className="hint")]
        return (items, str(len(ordered)), selection_title(cells, run.class_names), _changed(selection, selection_in),
                _changed(page, page_in), f"{page + 1} / {pages}", sort_options(cells), _changed(sort_by, sort_in),
                image, note)

    clicks.relay(app, {"type": "pair", "cells": ALL}, PAIR_CLICK)

    @app.callback(Output("gallery-download", "data"), Output("gallery-export-note", "children"),
                  Input("gallery-export", "n_clicks"), State("run-select", "value"),
                  State("gallery-selection", "data"), State("gallery-sort", "value"), State("gallery-conf", "value"),
                  prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def export_gallery(_clicks, run_name, selection, sort_by, conf):
        """The whole selection (every page) within the confidence range, in the gallery's order, as CSV."""
        run = inputs.run_of(store, run_name)
        cells = _cells_of(inputs.gallery_selection(selection, run))
        frame = export.gallery_frame(run, cells, inputs.sort_key(sort_by), inputs.confidence_range(conf))
        return export.download(frame, export.filename(run.name, export.selection_slug(cells, run.class_names))), ""


def _register_in_browser(app) -> None:
    """What runs in the page: the thumbnail click, the chosen cells outlined, the gallery scrolled into view."""
    # In the browser: a thumbnail click needs no server round trip, and the burst of
    # "new component" triggers each gallery page causes must not cost a request either.
    app.clientside_callback(
        _SELECT_IMAGE_JS, Output("selected-image", "data"),
        Input({"type": "gallery-item", "index": ALL}, "n_clicks"), Input("run-select", "value"),
        prevent_initial_call=True,
    )

    # In the browser too: the selected cells outlined on the heatmap (again after every redraw), and a
    # click on a cell or a pair button scrolls the gallery into view.
    app.clientside_callback(ClientsideFunction("xai", "highlightCells"),
                            Output("confusion-matrix", "figure", allow_duplicate=True),
                            Input("gallery-selection", "data"), Input("confusion-matrix", "figure"),
                            prevent_initial_call=True)
    app.clientside_callback(ClientsideFunction("xai", "revealGallery"), Output("errors-reveal", "data"),
                            Input("confusion-matrix", "clickData"), Input({"type": "pair", "cells": ALL}, "n_clicks"),
                            prevent_initial_call=True)


def _register_detail(app, store, prefix: str) -> None:
    """The detail card of the image a thumbnail click chose."""
    @app.callback(Output("image-detail", "className"), Output("detail-image", "src"),
                  Output("detail-caption", "children"), Output("detail-top5", "figure"),
                  Input("selected-image", "data"), Input(corrected.SWITCH, "value"), Input(corrected.STAMP, "data"))
    @inputs.guarded(inputs.constant("image-detail"), inputs.constant(""), inputs.hint, inputs.constant(_BLANK))
    def show_detail(selected, label_set, _reviews_saved):
        chosen = inputs.selected_image(store, selected)
        if chosen is None:
            return "image-detail empty", "", [], _BLANK
        run, i = chosen
        # the true label on the header's label set: a review "wrong -> X" makes it X (issue #10)
        t, given, note = corrected.reviewed_label(run, i, inputs.label_set(label_set))
        names, p = run.class_names, int(run.preds[i])
        true = names[t] + (f" (reviewed; given: {names[given]})" if t != given else "")
        caption = html.Dl([
            html.Dt("Test image"), html.Dd(f"#{i}"),
            html.Dt("True label"), html.Dd(true, className="lbl-true"),
            html.Dt("Predicted"), html.Dd(names[p], className="lbl-pred " + ("wrong" if t != p else "right")),
            html.Dt("Confidence"), html.Dd(f"{run.probs[i, p]:.1%}"),
            html.Dt("p(true class)"), html.Dd(f"{run.probs[i, t]:.1%}"),
        ])
        src = test_image_url(prefix, run, i, DETAIL_SIZE)
        fig = figures.top_k_figure(analysis.top_k(run.probs[i], 5), names, t)
        return "image-detail", src, [caption, *([html.P(note, className="hint")] if note else [])], fig
