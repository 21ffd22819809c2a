"""Side-by-side page: one image, one row per loaded run, one column per attribution method.

The grid itself is computed by :mod:`xai_dashboard.sidebyside`; callbacks here parse what the
page sends and render. The image being compared is ``dcc.Store(id="sbs-source")`` (format in
:mod:`xai_dashboard.sidebyside`). It is set by this tab's own test-index input and upload (checked once,
:func:`checked_upload`; files the browser drops are said by :mod:`.explain_source`'s guard), follows
the errors gallery's ``selected-image``, and by :func:`open_link` buttons that other views place
(the gallery's image detail, the explanations card): one click sets the source and opens this tab.
Their clicks reach the server through :data:`LINK` (:mod:`.clicks`: a link drawn while the gallery's
selection is on its way must not cancel that request). The image's true class follows the header's
label-set switch (:mod:`..corrected`), as does the grid's CSV (:func:`grid_frame`: one row per cell).
"""
from __future__ import annotations

import pandas as pd
from dash import ALL, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from .. import corrected, export, inputs, uploads
from ..cache import explain_cache
from ..figures import colorbar_figure
from ..images import shown
from ..methods import METHODS
from ..overlay import DEFAULT_COLORMAP
from ..sanity_file import BADGE
from ..sidebyside import (
    AUC_STEPS, CELL_SIZE, DEFAULT_METHODS, INPUT_SIZE, MAX_METHODS, MAX_RUNS, Grid, Row, build_grid, parse_source,
    test_source, upload_source,
)
from . import clicks, explain_source
from .explain_model import method_options, upload_to_source
from .map_view import BAR, BAR_HEIGHT
from .opened import TABS, when_opened

TITLE = "Side by side"
TAB = __name__.rpartition(".")[2]  # the tab's value: app.create_app names each tab after its module
OPEN = "sbs-open"  # the ``type`` of every one-click link's pattern-matching id
LINK = "sbs-link"  # the store their clicks are relayed to (:mod:`.clicks`)
_IMG = {"imageRendering": "pixelated"}
CSV_COLUMNS = ["source run", "index", "file", "label", "run", "input", "prediction", "confidence", "method",
               "deletion AUC", "fails sanity check", "error"]


def open_link(origin: str) -> html.Button:
    """The one-click way here, for another view to place. ``origin`` "gallery": compares the errors
    view's ``selected-image``; "explain": compares what the explanations tab shows (``xp-image``, its
    upload included)."""
    return html.Button("Compare across runs", id={"type": OPEN, "from": origin}, n_clicks=0, className="sbs-open",
                       title="this image in every loaded run, one column per method")


def layout(store) -> html.Div:
    limit = uploads.max_upload_bytes()
    return html.Div(className="view sbs-view", children=[
        dcc.Store(id="sbs-source", data=test_source(store.default, 0)),
        *explain_source.guard_stores("sbs", "sbs-upload", "sbs-error", limit),
        clicks.store(LINK),
        html.Div(className="card", children=[
            html.Div(className="toolbar", children=[
                html.H3("One image, every run"),
                html.Label(className="pick", children=[
                    "Test image #", dcc.Input(id="sbs-index", type="number", min=0, step=1, debounce=True,
                                              placeholder="index")]),
                dcc.Upload(id="sbs-upload", accept=uploads.ACCEPT, max_size=limit, multiple=False,
                           className="sbs-upload", children=html.Div(["…or drop an image / ", html.A("choose a file"),
                                                                      f" (up to {limit // 2**20} MB)"])),
            ]),
            html.Div(className="toolbar", children=[
                html.Label(className="pick", children=["Runs", dcc.Dropdown(
                    id="sbs-runs", multi=True, value=store.names[:MAX_RUNS],
                    options=[{"label": n, "value": n} for n in store.names])]),
                html.Label(className="pick", children=["Methods", dcc.Dropdown(
                    id="sbs-methods", multi=True, value=list(DEFAULT_METHODS), options=method_options())]),
                html.Button("Download CSV", id="sbs-export", n_clicks=0, className="export",
                            title="one row per run and method: prediction, deletion AUC, sanity check"),
                html.Span(id="sbs-export-note"),
                dcc.Download(id="sbs-download"),
            ]),
            html.P(f"The test index refers to the run chosen at the top. Each run sees the image as it sees its "
                   f"own: the same test image where it shares the test set, else the pixels resized and converted "
                   f"to its input; an upload is decoded for each run. Maps are for each run's predicted class; "
                   f"deletion AUC (RISE, {AUC_STEPS} steps; lower is better) is the class probability as the "
                   f"map's top pixels are replaced by the mean colour. At most {MAX_RUNS} runs x {MAX_METHODS} "
                   f"methods.", className="hint"),
            html.Div(id="sbs-error", role="alert"),
            html.Div(id="sbs-source-label", className="sbs-source-label"),
            dcc.Loading(html.Div(id="sbs-grid")),
        ]),
    ])


def linked_source(store, origin: str, selected, shown_image, contents, filename) -> dict:
    """The source an :func:`open_link` of ``origin`` stands for: the gallery's ``selected-image``, or
    the explanations tab's ``xp-image`` (an upload there: the file in ``upload-image``'s ``contents``)."""
    if origin == "gallery":
        chosen = inputs.selected_image(store, selected)
        if chosen is None:
            raise inputs.BadInput("click a thumbnail in the gallery first")
        return test_source(selected["run"], chosen[1])  # the store key: LoadedRun.name may repeat
    if origin == "explain" and isinstance(shown_image, dict) and shown_image.get("kind") == "upload":
        try:
            return upload_source(inputs.text(contents, "the uploaded file"), filename)
        except uploads.UploadError as e:
            raise inputs.BadInput(f"{shown(filename or 'upload')}: {e}") from None
    if origin == "explain":
        return parse_source(store, shown_image)
    raise inputs.BadInput(f"unknown link {shown(repr(origin))}")


def checked_upload(store, contents, filename, run_name) -> dict:
    """The source for an upload of this tab, decoded once here as the explanations tab decodes it (for the
    header's run): a file no run could read is one :class:`..inputs.BadInput`, the grid keeping its image,
    not the same error in every run's row."""
    contents, filename = inputs.text(contents, "the uploaded file"), inputs.text(filename, "the file name")
    _, message = upload_to_source(contents, filename, inputs.run_of(store, run_name))
    if message:
        raise inputs.BadInput(message)
    return upload_source(contents, filename)


def _clicked_link(fired: list[str], link) -> str | None:
    """The ``from`` of the :func:`open_link` whose click fired this round (``link``: :data:`LINK`'s data)."""
    button = clicks.clicked(link, OPEN) if f"{LINK}.data" in fired else None
    return None if button is None else str(button.get("from"))


def source_label(store, source: dict, label_set: str) -> str:
    """What is compared, the true class on ``label_set`` (the given one beside it when a review changed it)."""
    if source["kind"] == "upload":
        return f"Upload: {source['name']}"
    run, i = store.get(source["run"]), source["index"]
    label, given, _ = corrected.reviewed_label(run, i, label_set)
    names = run.class_names
    reviewed = f"; reviewed, given {names[given]}" if label != given else ""
    return f"Test image #{i} of {source['run']} (true class {names[label]}{reviewed})"


def source_columns(store, source: dict, label_set: str) -> dict:
    """The compared image's identifiers in :data:`CSV_COLUMNS`: its run (store key), test index, file
    (:func:`..export.image_frame`) and label on ``label_set``; an upload has only its file name."""
    if source["kind"] == "upload":
        return {"source run": "", "index": "", "file": source["name"], "label": ""}
    run = store.get(source["run"])
    head = export.image_frame(run, [source["index"]], corrected.predictions_for(run, label_set)[0].labels)
    return {"source run": source["run"], **head[["index", "file", "label"]].iloc[0].to_dict()}


def grid_frame(grid: Grid, source: dict) -> pd.DataFrame:
    """The grid as CSV: one row per (run, method) cell in the page's order (a run that could not see the
    image: one row, its error), each with ``source`` (:func:`source_columns`), the image the run was given,
    its prediction and probability, the method's name, the map's deletion AUC and the sanity badge's reason."""
    rows = []
    for row in grid.rows:
        seen = {**source, "run": row.run, "input": row.description, "prediction": row.predicted,
                "confidence": row.probability}
        rows += [{**seen, "error": row.error}] if row.error else [
            {**seen, "method": METHODS[c.method].label, "deletion AUC": c.deletion_auc,
             "fails sanity check": c.fails_sanity, "error": c.error} for c in row.cells]
    return export.table_frame(rows).reindex(columns=CSV_COLUMNS)  # the header even for no rows


def _row(row: Row, methods: list[str]) -> html.Tr:
    head = html.Th(className="sbs-run", scope="row", children=[
        html.Div(row.run, className="sbs-run-name"),
        html.Img(src=row.input_src, width=INPUT_SIZE, height=INPUT_SIZE, alt="input", style=_IMG)
        if row.input_src else None,
        html.Div(f"{row.description}; input {' x '.join(map(str, row.shape))}" if row.shape else "", className="hint"),
    ])
    if row.error:
        return html.Tr([head, html.Td(row.error, colSpan=len(methods), className="sbs-cell sbs-error", role="alert")],
                       className="sbs-row", **{"data-run": row.run})
    cells = []
    for cell in row.cells:
        body = [html.Div(row.prediction, className="sbs-pred", title="predicted class (probability)")]
        if cell.fails_sanity:  # the run's own randomisation check, as on the explanations tab
            body.append(html.Div(f"⚠ {BADGE}", className="badge sanity-badge", title=cell.fails_sanity))
        if cell.error:
            body.append(html.Div(cell.error, className="sbs-error"))
        else:
            body += [html.Img(src=cell.overlay_src, width=CELL_SIZE, height=CELL_SIZE, style=_IMG,
                              alt=f"{METHODS[cell.method].label} overlay"),
                     html.Div(f"deletion AUC {cell.deletion_auc:.3f}", className="sbs-auc",
                              title="lower is better: the probability falls fast as the top pixels go")]
        cells.append(html.Td(body, className="sbs-cell", **{"data-method": cell.method}))
    return html.Tr([head, *cells], className="sbs-row", **{"data-run": row.run})


def grid_view(grid: Grid) -> html.Div:
    """The grid as a table: ``tr.sbs-row[data-run]`` per run, ``td.sbs-cell[data-method]`` per method."""
    if not grid.methods or not grid.rows:
        return html.P("Choose at least one run and one method.", className="hint")
    header = html.Tr([html.Th("Run")] + [html.Th(METHODS[m].label, scope="col") for m in grid.methods])
    # every cell is a relative map drawn alike (:func:`..overlay.overlay_png`): one colour bar reads them all
    key = colorbar_figure(0, 1, DEFAULT_COLORMAP, "attribution, relative (1 = each map's maximum)", length=320,
                          horizontal=True)
    return html.Div([
        *[html.P(note, className="hint") for note in grid.notes],
        dcc.Graph(id="sbs-scale", figure=key, config=BAR, style={"width": "320px", "height": f"{BAR_HEIGHT}px"}),
        html.Table([html.Thead(header), html.Tbody([_row(r, grid.methods) for r in grid.rows])], className="sbs-grid"),
    ])


def register_callbacks(app, store) -> None:
    explain_source.register_guard(app, "sbs")

    @app.callback(Output("sbs-source", "data"), Output("sbs-error", "children"),
                  Output(TABS, "value", allow_duplicate=True),
                  Input(LINK, "data"), Input("selected-image", "data"),
                  Input("sbs-index", "value"), Input("sbs-upload", "contents"),
                  State("sbs-upload", "filename"), State("run-select", "value"), State("xp-image", "data"),
                  State("upload-image", "contents"), State("upload-image", "filename"), prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint, inputs.keep)
    def choose_source(link, selected, index, contents, filename, run_name, shown_image, xp_contents, xp_filename):
        fired = ctx.triggered_prop_ids
        origin = _clicked_link(fired, link)
        if origin is not None:
            return linked_source(store, origin, selected, shown_image, xp_contents, xp_filename), "", TAB
        if "sbs-upload.contents" in fired:
            return checked_upload(store, contents, filename, run_name), "", no_update
        if "selected-image.data" in fired and selected:
            return linked_source(store, "gallery", selected, None, None, None), "", no_update
        if "sbs-index.value" in fired and index is not None:
            run = inputs.run_of(store, run_name)
            return test_source(run_name, inputs.index(index, len(run.labels))), "", no_update
        raise PreventUpdate

    clicks.relay(app, {"type": OPEN, "from": ALL}, LINK)

    @app.callback(Output("sbs-grid", "children"), Input("sbs-source", "data"), Input("sbs-runs", "value"),
                  Input("sbs-methods", "value"), *when_opened(TAB))
    @inputs.guarded(inputs.hint)
    def render(source, runs, methods, _opened, tab):
        inputs.shown(tab, TAB)  # every tab's callbacks fire on page load; this one runs every model
        return grid_view(build_grid(store, parse_source(store, source), runs, methods, explain_cache()))

    @app.callback(Output("sbs-source-label", "children"), Input("sbs-source", "data"),
                  Input(corrected.SWITCH, "value"), Input(corrected.STAMP, "data"))
    @inputs.guarded(inputs.hint)
    def label(source, label_set, _reviews_saved):
        return source_label(store, parse_source(store, source), inputs.label_set(label_set))

    @app.callback(Output("sbs-download", "data"), Output("sbs-export-note", "children"),
                  Input("sbs-export", "n_clicks"), State("sbs-source", "data"), State("sbs-runs", "value"),
                  State("sbs-methods", "value"), State(corrected.SWITCH, "value"), prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def export_grid(_clicks, source, runs, methods, label_set):
        """The grid shown, as CSV: built again through the explain cache the page's grid filled (its maps,
        predictions and AUCs are hits), bounded as the grid is."""
        source = parse_source(store, source)
        grid = build_grid(store, source, runs, methods, explain_cache())
        if not grid.methods or not grid.rows:
            raise inputs.BadInput("choose at least one run and one method")
        what = ("upload", source["name"]) if source["kind"] == "upload" else (source["run"], f"test-{source['index']}")
        frame = grid_frame(grid, source_columns(store, source, inputs.label_set(label_set)))
        return export.download(frame, export.filename(*what, "side-by-side")), ""
