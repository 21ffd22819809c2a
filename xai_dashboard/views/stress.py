"""Stress test: the run's accuracy under 14 common corruptions x 5 severities (``stress.npz``,
:mod:`..stress_file`) as a heatmap, with the mean corruption accuracy and its drop from clean, over all
test images or one true class. Clicking a cell lists the images that corruption breaks at that severity
(right when clean, wrong when corrupted) as clean | corrupted pairs, the corrupted image regenerated
for just the shown page; each pair's Grad-CAMs (clean and corrupted, each for its prediction) are one
click away (the buttons' clicks reach the server through a relay store, :mod:`.clicks`). The heatmap's
table and a cell's pairs download as CSV. Also the two runs' heatmaps and their difference for "Compare
runs" (:func:`compare_card`). Here: the heatmaps and the callbacks; the pairs card's content is built in
:mod:`.stress_pairs`.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from dash import ALL, Input, Output, State, ctx, dcc, html, no_update
from plotly.subplots import make_subplots

from .. import export, inputs
from ..figures import GRAPH_CONFIG, _base, empty_figure, placeholder
from ..stress_file import SEVERITIES, STRESS, accuracy_table, heatmap_rows, load_stress, sample_note, summary
from . import clicks
from .job_button import job_controls, register_job_button
from .opened import when_opened
from .stress_pairs import CAM_OPEN, clicked_cell, gradcam_pair, pairs_frame, pairs_page, stored_cell

TITLE = "Stress test"
TAB = __name__.rpartition(".")[2]
CAM_CLICK = "stress-cam-click"  # the relay store of the pairs' Grad-CAM buttons (:data:`.stress_pairs.CAM_OPEN`)
_GRAPH = GRAPH_CONFIG
_COLUMNS = [str(s) for s in SEVERITIES] + ["mean"]
_PAIR_GRID = {"display": "grid", "gridTemplateColumns": "repeat(auto-fill, minmax(236px, 1fr))", "gap": "10px"}
SCOPE = ("Corruptions of Hendrycks & Dietterich (ICLR 2019) with their CIFAR-10-C parameters: the 14 that need "
         "no external images (glass blur, snow and frost are left out, Gaussian blur and saturate added), "
         "so the mean is not the 15-corruption CIFAR-10-C mean.")


def layout(store) -> html.Div:
    return html.Div(className="view stress-view", children=[
        dcc.Store(id="stress-cell"), dcc.Store(id="stress-page", data=0), clicks.store(CAM_CLICK),
        html.Div(className="card", children=[
            html.Div(className="toolbar", children=[
                html.H3("Accuracy under common corruptions"),
                dcc.Dropdown(id="stress-class", value="all", clearable=False, style={"width": "220px"},
                             options=[{"label": "all classes", "value": "all"}]),
                *_export_controls("table", "the accuracy table (corruption × severity, of the classes chosen)"),
            ]),
            html.P(id="stress-summary"),
            html.Div(id="stress-note", className="hint", role="status"),
            job_controls("Compute / continue the stress test", "stress-compute", "stress"),
            dcc.Graph(id="stress-heatmap", config=_GRAPH, figure=placeholder(560)),
            html.P(SCOPE + " Click a cell for the images that corruption breaks.", className="hint"),
        ]),
        html.Div(className="card", children=[
            html.Div(className="toolbar", children=[
                html.H3(id="stress-pairs-title", children="Images a corruption breaks"),
                html.Div(className="pager", children=[
                    html.Button("‹ Prev", id="stress-prev", n_clicks=0),
                    html.Span("1 / 1", id="stress-page-label"),
                    html.Button("Next ›", id="stress-next", n_clicks=0),
                ]),
                *_export_controls("pairs", "every image this cell breaks (every page), with both predictions"),
            ]),
            html.Div(id="stress-cam", className="row"),
            html.Div(id="stress-pairs", style=_PAIR_GRID),
        ]),
    ])


def _export_controls(what: str, title: str) -> list:
    return [html.Button("Download CSV", id=f"stress-export-{what}", n_clicks=0, className="export", title=title),
            html.Span(id=f"stress-export-{what}-note"), dcc.Download(id=f"stress-download-{what}")]


def _grid(table: dict) -> np.ndarray:
    """``(C + 1, S + 1)``: accuracies with each corruption's mean in the last column and each severity's
    mean (and the overall mean) in the last row."""
    acc = np.array(list(table["corruptions"].values()), dtype=np.float64).reshape(-1, len(SEVERITIES))
    full = np.column_stack([acc, acc.mean(1)])
    return np.vstack([full, full.mean(0)])


def _heatmap(z: np.ndarray, names: list[str], *, diff: bool = False, showscale: bool = True) -> go.Heatmap:
    text = [[f"{100 * v:+.1f}" if diff else f"{100 * v:.1f}" for v in row] for row in z]
    style = dict(colorscale="RdBu", zmid=0) if diff else dict(colorscale="RdYlGn", zmin=0, zmax=1)
    return go.Heatmap(z=z, x=_COLUMNS, y=names, text=text, texttemplate="%{text}",
                      hovertemplate="%{y}, severity %{x}: %{text} %<extra></extra>", showscale=showscale,
                      colorbar=dict(title="Δ acc" if diff else "accuracy", tickformat=".0%"), **style)


def heatmap_figure(table: dict, title: str) -> go.Figure:
    """Accuracy, corruption x severity (rows named by corruption, columns "1" .. "5"), with the means as a
    last column and row (both named "mean")."""
    names = [*table["corruptions"], "mean"]
    fig = go.Figure(_heatmap(_grid(table), names))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title="severity", type="category")
    return _base(fig, title, height=560)


def compare_figure(table_a: dict, table_b: dict, name_a: str, name_b: str) -> go.Figure:
    """The two runs' heatmaps side by side and B - A (the corruptions both have)."""
    shared = [n for n in table_a["corruptions"] if n in table_b["corruptions"]]
    grids = [_grid({**t, "corruptions": {n: t["corruptions"][n] for n in shared}}) for t in (table_a, table_b)]
    names = [*shared, "mean"]
    fig = make_subplots(1, 3, shared_yaxes=True, horizontal_spacing=0.1,
                        subplot_titles=[f"A: {name_a}", f"B: {name_b}", "B − A (points)"])
    fig.add_trace(_heatmap(grids[0], names, showscale=False), 1, 1)
    fig.add_trace(_heatmap(grids[1], names), 1, 2)
    fig.add_trace(_heatmap(grids[1] - grids[0], names, diff=True), 1, 3)
    fig.data[1].colorbar.update(x=0.64, xanchor="left", thickness=12)  # in the gap before the difference
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return _base(fig, "", height=560)


def summary_text(data: dict, table: dict, class_name: str | None, num_test: int) -> str:
    """The line under the heatmap; ``num_test``: the run's test images, to say when ``data`` is a sample of them."""
    s, cfg = summary(table), data["config"]
    scope = f"the {table['images']:,} '{class_name}' images among " if class_name else ""
    sample = sample_note(data, num_test)
    return (f"Clean accuracy {s['clean']:.2%}; mean corruption accuracy {s['mean']:.2%} "
            f"({len(table['corruptions'])} corruptions × {len(SEVERITIES)} severities), a relative drop of "
            f"{s['relative_drop']:.1%} from clean. On {scope}{len(data['index']):,} test images, "
            f"{cfg['precision']} inference, noise seed {cfg['seed']}." + (f" Images: {sample}." if sample else ""))


def missing_text(run, problem: str) -> str:
    return (f"No stress test for {run.name} yet ({problem}). It is computed by "
            f"`xai-dashboard precompute stress {run.run.path}` or the button below: every test image under "
            f"{len(SEVERITIES)} severities of each corruption (cifar10-fast: ~15 minutes on 2 CPU cores).")


def _label(value, k: int) -> int | None:
    return None if value in (None, "all") else inputs.class_index(value, k)


def _evaluated(data: dict) -> list[str]:
    """The corruptions the (possibly unfinished) file holds."""
    return data["config"]["corruptions"][:len(data["pred"])]


def register_callbacks(app, store) -> None:
    @app.callback(Output("stress-heatmap", "figure"), Output("stress-summary", "children"),
                  Output("stress-note", "children"), Output("stress-class", "options"),
                  Input("run-select", "value"), Input("stress-class", "value"), *when_opened(TAB),
                  Input("stress-status", "children"))
    @inputs.guarded(inputs.figure, inputs.constant(""), inputs.hint, inputs.keep)
    def heatmap(run_name, label, _opened, tab, _job):
        inputs.shown(tab, TAB)
        run = inputs.run_of(store, run_name)
        names = run.class_names
        options = [{"label": "all classes", "value": "all"}] + [{"label": n, "value": i} for i, n in enumerate(names)]
        label = _label(label, len(names))
        data, note = load_stress(run.run.path, run.meta)
        if data is None:
            return empty_figure("no stress test for this run", height=560), "", missing_text(run, note), options
        if len(data["pred"]) == 0:
            return empty_figure("no corruption evaluated yet", height=560), "", note, options
        table = accuracy_table(data, label)
        scope = "all classes" if label is None else f"true class '{names[label]}'"
        return (heatmap_figure(table, f"{run.name}: accuracy (%), {scope}"),
                summary_text(data, table, None if label is None else names[label], run.meta["dataset"]["num_test"]),
                note, options)

    _register_pairs(app, store)
    _register_exports(app, store)
    register_job_button(app, store, "stress", "stress-compute", "stress")


def _stress_of(run) -> dict:
    data, note = load_stress(run.run.path, run.meta)
    if data is None:
        raise inputs.BadInput(missing_text(run, note))
    return data


def _register_pairs(app, store) -> None:
    prefix = app.config.requests_pathname_prefix
    untitled = "Images a corruption breaks"

    # The heatmap click is read here, not stored by a callback of its own first: one round trip per click.
    @app.callback(Output("stress-pairs", "children"), Output("stress-pairs-title", "children"),
                  Output("stress-page", "data"), Output("stress-page-label", "children"), Output("stress-cell", "data"),
                  Input("stress-heatmap", "clickData"), Input("stress-class", "value"), Input("run-select", "value"),
                  *when_opened(TAB), Input("stress-prev", "n_clicks"), Input("stress-next", "n_clicks"),
                  State("stress-cell", "data"), State("stress-page", "data"))
    @inputs.guarded(inputs.hint, inputs.constant(untitled), inputs.constant(0), inputs.constant("1 / 1"),
                    inputs.constant(None))
    def pairs(click, label, run_name, _opened, tab, _prev, _next, cell, page):
        """The pairs of the clicked severity cell (a mean cell keeps the current one; none after a run switch)."""
        inputs.shown(tab, TAB)
        run = inputs.run_of(store, run_name)
        data = _stress_of(run)
        trigger = ctx.triggered_id
        if trigger == "run-select":
            cell = None
        elif trigger == "stress-heatmap" and click is not None:
            cell = clicked_cell(click, _evaluated(data)) or stored_cell(cell, _evaluated(data))
        else:
            cell = stored_cell(cell, _evaluated(data))
        if cell is None:
            return html.P("Click a severity cell of the heatmap.", className="hint"), untitled, 0, "1 / 1", None
        step = {"stress-prev": -1, "stress-next": 1}.get(trigger)
        page = inputs.page(page) + step if step else 0  # a new cell, class or run starts on the first page
        return *pairs_page(run, data, cell, _label(label, len(run.class_names)), page, prefix), cell

    clicks.relay(app, {"type": CAM_OPEN, "index": ALL}, CAM_CLICK)

    @app.callback(Output("stress-cam", "children"), Input(CAM_CLICK, "data"),
                  State("stress-cell", "data"), State("run-select", "value"), prevent_initial_call=True)
    @inputs.guarded(inputs.hint)
    def gradcam(click, cell, run_name):
        button = clicks.clicked(click, CAM_OPEN)
        if button is None:
            return no_update
        run = inputs.run_of(store, run_name)
        index = inputs.index(button.get("index"), len(run.labels))
        data = _stress_of(run)
        cell = stored_cell(cell, _evaluated(data))
        if cell is None:
            raise inputs.BadInput("choose a heatmap cell first")
        return gradcam_pair(run, index, cell["corruption"], cell["severity"], data["config"]["seed"])


def _register_exports(app, store) -> None:
    @app.callback(Output("stress-download-table", "data"), Output("stress-export-table-note", "children"),
                  Input("stress-export-table", "n_clicks"), State("run-select", "value"),
                  State("stress-class", "value"), prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def export_table(_clicks, run_name, label):
        """The heatmap's accuracies, unrounded, for the classes shown."""
        run = inputs.run_of(store, run_name)
        label = _label(label, len(run.class_names))
        scope = "all classes" if label is None else run.class_names[label]
        rows = heatmap_rows(accuracy_table(_stress_of(run), label), scope)
        return export.download(export.table_frame(rows), export.filename(run.name, "stress", scope)), ""

    @app.callback(Output("stress-download-pairs", "data"), Output("stress-export-pairs-note", "children"),
                  Input("stress-export-pairs", "n_clicks"), State("run-select", "value"),
                  State("stress-cell", "data"), State("stress-class", "value"), prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def export_pairs(_clicks, run_name, cell, label):
        """Every image the chosen cell breaks (all pages), for the classes shown."""
        run = inputs.run_of(store, run_name)
        data = _stress_of(run)
        cell = stored_cell(cell, _evaluated(data))
        if cell is None:
            raise inputs.BadInput("Click a severity cell of the heatmap first.")
        label = _label(label, len(run.class_names))
        name = export.filename(run.name, cell["corruption"], f"severity-{cell['severity']}",
                               "all classes" if label is None else run.class_names[label])
        return export.download(pairs_frame(run, data, cell, label), name), ""


def compare_card() -> html.Div:
    """The "Compare runs" card: both runs' heatmaps and their difference (:func:`register_compare`)."""
    return html.Div(className="card", children=[
        html.H3("Accuracy under common corruptions (stress test)"),
        html.Div(id="compare-stress-note", className="hint", role="status"),
        dcc.Graph(id="compare-stress", config=_GRAPH, figure=placeholder(560))])


def register_compare(app, store) -> None:
    @app.callback(Output("compare-stress", "figure"), Output("compare-stress-note", "children"),
                  Input("compare-a", "value"), Input("compare-b", "value"), *when_opened("compare"))
    @inputs.guarded(inputs.figure, inputs.hint)
    def compare(a, b, _opened, tab):
        inputs.shown(tab, "compare")
        ra = inputs.run_of(store, a)
        if b is None:
            return empty_figure("Nothing to compare", height=560), ""
        rb = inputs.run_of(store, b)
        if rb.name not in store.comparable(ra.name):
            raise inputs.BadInput(f"runs {ra.name!r} and {rb.name!r} were not evaluated on the same test images")
        tables, missing = [], []
        for run in (ra, rb):
            data, note = load_stress(run.run.path, run.meta)
            if data is None or len(data["pred"]) == 0:
                missing.append(f"{run.name}: `xai-dashboard precompute stress {run.run.path}` ({note or 'empty'})")
            else:
                tables.append(accuracy_table(data))
        if missing:
            return empty_figure("a stress test is missing", height=560), (
                f"Robustness to corruptions needs {STRESS.name} for both runs; compute " + "; ".join(missing))
        sa, sb = summary(tables[0]), summary(tables[1])
        return compare_figure(*tables, ra.name, rb.name), (
            f"Mean corruption accuracy: A {sa['mean']:.2%} (clean {sa['clean']:.2%}), "
            f"B {sb['mean']:.2%} (clean {sb['clean']:.2%}): {100 * (sb['mean'] - sa['mean']):+.2f} points.")
