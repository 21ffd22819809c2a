"""Overview page: headline metrics, per-class table and bars, training curves,
ROC / precision-recall, reliability, and the run's timing metadata."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import dash_ag_grid as dag
from dash import Input, Output, State, dcc, html

from .. import analysis, corrected, export, figures, inputs

TITLE = "Overview"
_GRAPH = figures.GRAPH_CONFIG
# a class with no test images has no recall (NaN, sent as null): "n/a", as the trainer prints it
_3F = {"function": "params.value == null ? 'n/a' : d3.format('.3f')(params.value)"}
# Sorting happens in the browser on rows already sent: at most a few hundred classes, so paging
# the table there costs nothing on the server.
CLASS_COLUMNS = [
    {"field": "class", "headerName": "Class", "flex": 2},
    *[{"field": m, "headerName": h, "type": "numericColumn", "valueFormatter": _3F}
      for m, h in (("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"))],
    {"field": "found", "headerName": "Found", "type": "numericColumn", "headerTooltip": "correctly predicted"},
    {"field": "support", "headerName": "Support", "type": "numericColumn"},
    {"field": "prevalence", "headerName": "Prevalence", "type": "numericColumn",
     "headerTooltip": "share of the test set", "valueFormatter": {"function": "d3.format('.1%')(params.value)"}},
]


def layout(store) -> html.Div:
    return html.Div(className="view overview-view", children=[
        html.Div(id="run-info", className="run-info"),
        html.Div(id="overview-warnings", className="warnings"),
        html.Div(id="overview-cards", className="cards"),
        html.Div(className="row", children=[
            html.Div(className="card half", children=[
                html.Div(className="toolbar", children=[
                    html.H3("Per-class metrics"),
                    html.Button("Download CSV", id="class-export", n_clicks=0, className="export"),
                    html.Span(id="class-export-note"),
                    dcc.Download(id="class-download"),
                ]),
                dag.AgGrid(
                    id="class-table", columnDefs=CLASS_COLUMNS, rowData=[], columnSize="sizeToFit",
                    defaultColDef={"sortable": True, "resizable": True},
                    dashGridOptions={"domLayout": "autoHeight", "pagination": True, "paginationPageSize": 20,
                                     "paginationPageSizeSelector": False},
                    className="class-table",
                ),
            ]),
            html.Div(className="card half", children=[dcc.Graph(id="class-bars", config=_GRAPH)]),
        ]),
        html.Div(className="card", children=[dcc.Graph(id="history-graph", config=_GRAPH)]),
        html.Div(className="row", children=[
            html.Div(className="card half", children=[dcc.Graph(id="roc-graph", config=_GRAPH)]),
            html.Div(className="card half", children=[dcc.Graph(id="pr-graph", config=_GRAPH)]),
        ]),
        html.Div(className="row", children=[
            html.Div(className="card half", children=[dcc.Graph(id="reliability-graph", config=_GRAPH)]),
            html.Div(className="card half", children=[html.H3("Inference speed"), html.Div(id="timings")]),
        ]),
    ])


def metric_cards(overall: dict, class_names: list[str]) -> list[tuple[str, str, str]]:
    """``(label, value, hint)`` for the headline numbers; top-3 only with more than 3 classes."""
    majority = class_names[overall["majority_class"]]
    cards = [
        ("Accuracy", f"{overall['accuracy']:.2%}",
         f"always '{majority}' scores {overall['majority_accuracy']:.2%}; {overall['n']:,} test images"),
        ("Balanced accuracy", f"{overall['balanced_accuracy']:.2%}",
         f"mean recall over classes; chance is {1 / len(class_names):.2%}"),
        ("MCC", f"{overall['mcc']:.3f}", "Matthews correlation: 0 = no better than chance, 1 = perfect"),
    ]
    if overall.get("top3") is not None:
        cards.append(("Top-3 accuracy", f"{overall['top3']:.2%}", "true class among the 3 most probable"))
    return cards + [
        ("Macro precision", f"{overall['precision']:.3f}", "unweighted mean over the classes with test images"),
        ("Macro recall", f"{overall['recall']:.3f}", "unweighted mean over the classes with test images"),
        ("Macro F1", f"{overall['f1']:.3f}", "unweighted mean over the classes with test images"),
        ("ECE", f"{overall['ece']:.3f}", f"expected calibration error; log loss {overall['log_loss']:.3f}"),
    ]


def model_warnings(overall: dict, per_class: list[dict], class_names: list[str]) -> list[str]:
    """Plain-words warnings: not better than the majority-class baseline; classes never found."""
    out = []
    majority = class_names[overall["majority_class"]]
    if overall["accuracy"] <= overall["majority_accuracy"]:
        out.append(f"Not better than always answering '{majority}': accuracy {overall['accuracy']:.2%} "
                   f"against {overall['majority_accuracy']:.2%} for the majority class. Judge this model by "
                   f"balanced accuracy ({overall['balanced_accuracy']:.2%}) and per-class recall.")
    missed = [r for r in per_class if r["support"] > 0 and r["found"] == 0]
    if missed:
        listed = ", ".join(f"'{r['class']}' (0 of {r['support']:,})" for r in missed[:8])
        more = f" and {len(missed) - 8} more" if len(missed) > 8 else ""
        out.append(f"Recall 0 for {len(missed)} class{'es' if len(missed) > 1 else ''}: the model never "
                   f"finds {listed}{more}. Class weights or oversampling (xai-train --class-weighting "
                   f"--oversample), or a lower decision threshold (Threshold tab), may help.")
    return out


def timing_rows(meta: dict) -> list[tuple[str, str]]:
    """Readable rows from ``meta["timings"]`` (and model size), skipping what the run did not record."""
    t = meta.get("timings") or {}
    rows = []
    if t.get("inference_images_per_s"):
        rate = t["inference_images_per_s"]
        rows += [("Inference throughput", f"{rate:,.0f} images/s"),
                 ("Mean latency per image (batched)", f"{1000.0 / rate:.3f} ms")]
    for key, label, fmt in (("inference_latency_ms", "Single-image latency", "{:.2f} ms"),
                            ("train_images_per_s", "Training throughput", "{:,.0f} images/s"),
                            ("train_seconds", "Training time", "{:,.1f} s"),
                            ("wall_seconds", "Wall time", "{:,.1f} s")):
        if t.get(key) is not None:
            rows.append((label, fmt.format(t[key])))
    if meta.get("num_parameters"):
        rows.append(("Parameters", f"{meta['num_parameters']:,}"))
    if meta.get("gflops_per_image"):
        rows.append(("GFLOPs per image", f"{meta['gflops_per_image']:.4f}"))
    device = (meta.get("provenance") or {}).get("device")
    if device:
        rows.append(("Measured on", str(device)))
    return rows


@lru_cache(maxsize=16)
def overview_figures(p: analysis.Predictions, names: tuple[str, ...], history_json: str, run_dir: Path
                     ) -> tuple[dict, ...]:
    """The five overview figures as plain dicts, memoised by content (predictions, classes, history).

    Dicts rather than ``go.Figure``: a cached dict is serialised for each page load
    without re-validating anything.
    """
    s = corrected.summary_for(p, names, run_dir)  # the stored summary, or the reviewed labels'
    return tuple(f.to_dict() for f in (
        figures.class_metrics_figure(s.per_class), figures.history_figure(json.loads(history_json)),
        figures.roc_figure(s.curves, list(names)), figures.pr_figure(s.curves, list(names)),
        figures.reliability_figure(s.calibration),
    ))


def _figures_of(run, p: analysis.Predictions | None = None) -> tuple[dict, ...]:
    """``p``: the run's predictions scored on the chosen label set (default: the original labels)."""
    return overview_figures(analysis.predictions_of(run) if p is None else p, tuple(run.class_names),
                            json.dumps(run.run.history), Path(run.run.path))


def warm_up(store) -> None:
    """Build the default run's figures ahead of the first page load (see ``app.warm_up``)."""
    _figures_of(store.get(store.default))


def register_callbacks(app, store) -> None:
    @app.callback(
        Output("run-info", "children"), Output("overview-warnings", "children"),
        Output("overview-cards", "children"), Output("class-table", "rowData"),
        Output("class-bars", "figure"), Output("history-graph", "figure"), Output("roc-graph", "figure"),
        Output("pr-graph", "figure"), Output("reliability-graph", "figure"), Output("timings", "children"),
        Input("run-select", "value"), Input(corrected.SWITCH, "value"), Input(corrected.STAMP, "data"),
    )
    @inputs.guarded(inputs.hint, inputs.constant([]), inputs.constant([]), inputs.constant([]),
                    *[inputs.figure] * 5, inputs.hint)
    def update_overview(run_name, label_set, _reviews_saved):
        run = inputs.run_of(store, run_name)
        names = run.class_names
        p, s, label_note = corrected.scored(run, inputs.label_set(label_set))
        meta = run.meta
        info = (f"{run.name}: {meta['arch']} on {meta['dataset']['name']} "
                f"({meta['dataset']['num_test']:,} test images, {len(names)} classes"
                + (f", {meta['epochs_completed']} epochs" if meta.get("epochs_completed") else "") + ")")
        cards = [html.Div(className="metric", children=[html.Div(label, className="label"),
                                                         html.Div(value, className="value"),
                                                         html.Div(hint, className="hint")])
                 for label, value, hint in metric_cards(s.overall, names)]
        warnings = [html.Div(w, className="warning", role="alert")
                    for w in model_warnings(s.overall, s.per_class, names) + [label_note] * bool(label_note)]
        rows = timing_rows(meta)
        timings = html.Table(className="kv", children=[html.Tr([html.Th(k), html.Td(v)]) for k, v in rows]) \
            if rows else html.P("This run recorded no timings.", className="hint")
        return (info, warnings, cards, s.per_class, *_figures_of(run, p), timings)

    @app.callback(Output("class-download", "data"), Output("class-export-note", "children"),
                  Input("class-export", "n_clicks"), State("run-select", "value"), State(corrected.SWITCH, "value"),
                  prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def export_classes(_clicks, run_name, label_set):
        """The per-class table as CSV, unrounded (the grid shows three decimals), on the chosen labels."""
        run = inputs.run_of(store, run_name)
        frame = export.table_frame(corrected.scored(run, inputs.label_set(label_set))[1].per_class)
        return export.download(frame, export.filename(run.name, "per-class")), ""
