"""The run's faithfulness scoreboard (``scoreboard.npz``, :mod:`..scoreboard_file`) as a sortable AgGrid.

One row per method: mean deletion and insertion AUC with 95 % t-intervals, the same for the
random maps as smooth as the method's and for the edge map, and a paired Wilcoxon signed-rank test
against random (p-value and whether the method is better). Over every scored image or, on
demand, those of one true class. Reads the file only: no model, no torch.
"""
from __future__ import annotations

import math

from dash import ClientsideFunction, Input, Output, dcc, html
import dash_ag_grid as dag

from .. import export, inputs
from ..methods import METHODS
from ..scoreboard_file import SCOREBOARD, load_scoreboard, table_rows
from .job_button import job_controls, register_job_button
from .opened import when_opened

TAB = "explain"
SCORES = {"deletion": "Deletion AUC ↓", "random_deletion": "random", "edge_deletion": "edge",
          "insertion": "Insertion AUC ↑", "random_insertion": "random", "edge_insertion": "edge"}
_NUMBER = {"function": "params.value == null ? '' : d3.format('.3f')(params.value)"}
_P = {"function": "params.value == null ? '' : d3.format('.2g')(params.value)"}


def columns() -> list[dict]:
    cols = [{"field": "label", "headerName": "Method", "pinned": "left"}, {"field": "n", "maxWidth": 80}]
    for field, header in SCORES.items():
        cols += [{"field": field, "headerName": header, "valueFormatter": _NUMBER, "filter": "agNumberColumnFilter"},
                 {"field": f"{field}_ci", "headerName": "95 % CI", "sortable": False}]
    for measure in ("deletion", "insertion"):
        cols += [{"field": f"{measure}_vs_random", "headerName": f"{measure} vs random"},
                 {"field": f"{measure}_p", "headerName": "Wilcoxon p", "valueFormatter": _P}]
    return cols


def section() -> html.Details:
    return html.Details(style={"marginTop": "12px"}, children=[
        html.Summary("Scoreboard: every method on a sample of test images"),
        html.Div(className="toolbar", children=[
            dcc.Dropdown(id="xp-board-class", value="all", clearable=False, style={"width": "220px"},
                         options=[{"label": "all classes", "value": "all"}]),
            html.Button("Download CSV", id="xp-board-export", n_clicks=0, className="export",
                        title="the table as shown (AG Grid writes it in the browser)"),
        ]),
        html.Div(id="xp-board-note", className="hint", role="status"),
        job_controls("Compute / continue the scoreboard (1,000 images)", "xp-board-compute", "xp-board"),
        dag.AgGrid(id="xp-board-grid", columnDefs=columns(), rowData=[],
                   defaultColDef={"sortable": True, "resizable": True, "minWidth": 90},
                   dashGridOptions={"domLayout": "autoHeight"}, className="scoreboard-table",
                   csvExportParams={"fileName": "scoreboard.csv"}),
    ])


def _finite(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def grid_rows(data: dict, label: int | None = None) -> list[dict]:
    """:func:`..scoreboard_file.table_rows` for the grid: method labels, CIs as text, NaN as empty."""
    out = []
    for row in table_rows(data, label):
        shown = {k: _finite(v) for k, v in row.items()}
        for field in SCORES:
            shown[f"{field}_ci"] = (f"[{row[f'{field}_lo']:.3f}, {row[f'{field}_hi']:.3f}]"
                                    if math.isfinite(row[f"{field}_lo"]) else "")
        out.append({**shown, "label": METHODS[row["method"]].label if row["method"] in METHODS else row["method"]})
    return out


def note(data: dict | None, problem: str, class_name: str | None) -> str:
    """What the table covers: images, how they were chosen, the methods left out, or why there is none."""
    if data is None:
        return problem
    cfg = data["config"]
    skipped = "; ".join(f"{METHODS[m].label if m in METHODS else m} left out: {why}"
                        for m, why in cfg["skipped"].items())
    scope = f"the {class_name} images among them" if class_name else "all of them"
    return " ".join(filter(None, [
        f"{len(data['index'])} test images stratified by class (seed {cfg['seed']}), {scope}; target: "
        f"{cfg['target']}; random maps as smooth as each method's, mean over {cfg['seeds']} seeds.",
        skipped, problem]))


def register_callbacks(app, store) -> None:
    # the grid's own CSV export, of the rows as sorted on the page: no request
    app.clientside_callback(ClientsideFunction("xai", "exportGrid"), Output("xp-board-grid", "exportDataAsCsv"),
                            Input("xp-board-export", "n_clicks"), prevent_initial_call=True)

    @app.callback(Output("xp-board-grid", "rowData"), Output("xp-board-note", "children"),
                  Output("xp-board-class", "options"), Output("xp-board-grid", "csvExportParams"),
                  Input("run-select", "value"), Input("xp-board-class", "value"), *when_opened(TAB),
                  Input("xp-board-status", "children"))
    @inputs.guarded(inputs.constant([]), inputs.hint, inputs.keep, inputs.keep)
    def board(run_name, label, _opened, tab, _job):
        inputs.shown(tab, TAB)
        run = inputs.run_of(store, run_name)
        names = run.class_names
        label = None if label in (None, "all") else inputs.class_index(label, len(names))
        options = [{"label": "all classes", "value": "all"}] + [{"label": n, "value": i} for i, n in enumerate(names)]
        data, problem = load_scoreboard(run.run.path, run.meta)
        csv = {"fileName": export.filename(run.name, "scoreboard", "all" if label is None else names[label])}
        if data is None:
            return [], note(None, problem or f"{SCOREBOARD.name}: absent", None), options, csv
        rows = grid_rows(data, label)
        return rows, note(data, problem, None if label is None else names[label]), options, csv

    register_job_button(app, store, "scoreboard", "xp-board-compute", "xp-board")
