"""Threshold page: one class against the rest at a decision threshold the user moves.

For a two-class run the positive class defaults to the minority class (the one an
accuracy figure hides); for more classes any class is taken one-vs-rest. The
threshold is a slider, or is chosen for a target recall or a cost ratio FN:FP; the
confusion matrix, precision, recall, F1, balanced accuracy and MCC at it each show
the prevalence beside them, and the ROC and PR curves mark the operating point.

Every figure follows the header's label-set switch (:mod:`..corrected`): on the reviewed labels
the positives, the curves and the threshold a target recall or cost picks are those of the
reviewed labels, and the toolbar says which labels are in use.

Per-user state: ``chosen-thresholds`` (session storage) maps a run name to
``{"positive": class index, "threshold": t}``; "Compare runs" reads it to compare
two runs at their chosen thresholds. Every callback here is gated on this tab.
"""
from __future__ import annotations

import numpy as np
from dash import Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from .. import corrected, export, figures, inputs, thresholds
from ..analysis import Predictions
from .opened import when_opened

TITLE = "Threshold"
TAB = __name__.rpartition(".")[2]
STEP = 0.0001  # slider resolution; chosen thresholds are snapped onto it only when that changes nothing
_GRAPH = figures.GRAPH_CONFIG
_BLANK = figures.placeholder(380)


def layout(store) -> html.Div:
    return html.Div(className="view threshold-view", children=[
        dcc.Store(id="chosen-thresholds", storage_type="session", data={}),
        html.Div(className="card toolbar threshold-toolbar", children=[
            html.Label([html.Span("Positive class", id="threshold-class-label"),
                        dcc.Dropdown(id="threshold-class", clearable=False)], className="pick"),
            html.Label(["Target recall", dcc.Input(id="threshold-recall", type="number", min=0.01, max=1,
                                                   step=0.01, value=0.9, debounce=True),
                        html.Button("Set threshold", id="threshold-by-recall", n_clicks=0)], className="pick"),
            html.Label(["Cost of a miss : a false alarm", dcc.Input(id="threshold-cost", type="number", min=0.01,
                                                                    step="any", value=5, debounce=True),
                        html.Button("Set threshold", id="threshold-by-cost", n_clicks=0)], className="pick"),
            html.Div(className="threshold-slider", children=[
                html.Span("Decision threshold: an image is called positive when p(positive) ≥ it"),
                dcc.Slider(id="threshold-slider", min=0, max=1, step=STEP, value=thresholds.DEFAULT_THRESHOLD,
                           marks={v: f"{v:g}" for v in (0, 0.1, 0.25, 0.5, 0.75, 0.9, 1)}, updatemode="mouseup",
                           tooltip={"placement": "bottom", "always_visible": True}),
            ]),
            html.Div(id="threshold-note", className="hint threshold-note"),
            html.Div(id="threshold-labels", className="threshold-labels"),
            html.Div(className="threshold-export", children=[
                html.Span("At this threshold, download as CSV:"),
                *[html.Button(label, id=f"threshold-export-{kind}", n_clicks=0, className="export")
                  for kind, label in export.THRESHOLD_KINDS.items()],
                html.Span(id="threshold-export-note"),
                dcc.Download(id="threshold-download"),
            ]),
        ]),
        html.Div(id="threshold-cards", className="cards"),
        html.Div(className="row", children=[
            html.Div(className="card third", children=[dcc.Graph(id=f"threshold-{key}", config=_GRAPH, figure=_BLANK)])
            for key in ("cm", "roc", "pr")
        ]),
    ])


def positive_class(labels: np.ndarray, k: int, chosen: dict | None) -> int:
    """The class the user picked for this run before, else the minority class."""
    if chosen and 0 <= int(chosen.get("positive", -1)) < k:
        return int(chosen["positive"])
    return thresholds.minority_class(labels, k)


def restored_threshold(chosen: dict | None, positive: int) -> float:
    """The threshold the user chose for this run and class, else the arg-max one (0.5)."""
    if chosen and chosen.get("positive") == positive and chosen.get("threshold") is not None:
        return float(chosen["threshold"])
    return thresholds.DEFAULT_THRESHOLD


def threshold_cards(m: dict, name: str, curve: dict) -> list[tuple[str, str, str]]:
    """``(label, value, hint)`` of the metrics at one threshold (``m`` from ``metrics_at``) and the
    threshold-free areas of ``curve`` (one entry of ``roc_pr_curves``), each with the prevalence beside it."""
    prev = f"prevalence {m['prevalence']:.2%} ({m['positives']:,} of {m['n']:,})"
    flagged = (m["tp"] + m["fp"]) / max(m["n"], 1)
    return [
        ("Precision", f"{m['precision']:.3f}", f"{m['tp']:,} of {m['tp'] + m['fp']:,} flagged are {name}; "
                                               f"a random guess scores the {prev}"),
        ("Recall", f"{m['recall']:.3f}", f"finds {m['tp']:,} of {m['positives']:,} {name}; {prev}"),
        ("F1", f"{m['f1']:.3f}", prev),
        ("Balanced accuracy", f"{m['balanced_accuracy']:.2%}", f"chance is 50%; {prev}"),
        ("MCC", f"{m['mcc']:.3f}", f"0 = chance, 1 = perfect; {prev}"),
        ("Flagged positive", f"{flagged:.2%}", f"{m['tp'] + m['fp']:,} images called {name}; {prev}"),
        ("ROC-AUC · PR-AUC", f"{curve['roc_auc']:.3f} · {curve['ap']:.3f}",
         f"over all thresholds; chance scores 0.5 · the prevalence; {prev}"),
    ]


def _cards(rows) -> list:
    return [html.Div(className="metric", children=[html.Div(label, className="label"),
                                                   html.Div(value, className="value"),
                                                   html.Div(hint, className="hint")])
            for label, value, hint in rows]


def threshold_outputs(names: list[str], p: Predictions, curves: list[dict], positive: int, threshold: float
                      ) -> tuple:
    """Cards, confusion matrix, ROC and PR figures of ``positive`` vs the rest at ``threshold``.

    ``p``: the run's predictions on the label set in use (``labels`` int ``(N,)``, ``probs`` ``(N, K)``);
    ``curves``: the per-class ROC/PR curves of the summary on the same labels (``RunSummary.curves``).
    """
    name = names[positive]
    y = p.labels == positive
    if y.all() or not y.any():
        msg = f"'{name}' has {'every' if y.any() else 'no'} test image: there is nothing to threshold."
        empty = figures.empty_figure(msg)
        return [html.P(msg, className="warning")], empty, empty, empty
    m = thresholds.metrics_at(y, p.probs[:, positive], threshold)
    negative = names[1 - positive] if len(names) == 2 else f"not {name}"
    cm = figures.confusion_figure(np.asarray(m["cm"]), [negative, name],
                                  title=f"Confusion matrix at threshold {threshold:.4g}")
    curve = curves[positive]
    roc, pr = figures.operating_point_figures(curve, m, name)
    return _cards(threshold_cards(m, name, curve)), cm, roc, pr


def typed(value, wanted: str):
    """A number box's value; None -> :class:`..inputs.BadInput` asking for ``wanted`` ("a target recall in
    (0, 1]"): the browser sends None, not the text typed, for an empty box, text that is no number, and a
    number outside the box's min, max or step."""
    if value is None:
        raise inputs.BadInput(f"Enter {wanted}: the box is empty or holds no number in that range.")
    return value


def chosen_by(trigger: str, run, positive: int, recall, cost, labels: np.ndarray | None = None
              ) -> tuple[float, str]:
    """The threshold (and a sentence about it) for a "Set threshold" button; only the box that
    button reads is parsed (an empty cost box does not stop a target recall). ``labels`` int ``(N,)``:
    the label set in use (the reviewed labels); default ``run.labels``."""
    y = (run.labels if labels is None else labels) == positive
    scores = run.probs[:, positive]
    name = run.class_names[positive]
    if y.all() or not y.any():  # a class that is every test image, or none: no threshold separates it
        raise inputs.BadInput(f"Cannot choose a threshold: '{name}' has {'every' if y.any() else 'no'} test image.")
    if trigger == "threshold-by-recall":
        recall = inputs.number(typed(recall, "a target recall in (0, 1]"), "the target recall", 0.0, 1.0,
                               low_open=True)
        t = thresholds.threshold_for_recall(y, scores, recall)
        why = f"the largest threshold that still finds at least {recall:.0%} of the {name}"
    else:
        cost = inputs.number(typed(cost, "a cost ratio above 0"), "the cost ratio", 0.0, float("inf"),
                             low_open=True)
        t = thresholds.threshold_for_cost(y, scores, cost)
        why = f"the smallest total cost when missing a {name} costs {cost:g} false alarms"
    return thresholds.snap_down(t, scores, STEP), f"Threshold {t:.6g}: {why}."


def register_callbacks(app, store) -> None:
    _register_choice(app, store)
    _register_outputs(app, store)
    _register_export(app, store)


def _register_choice(app, store) -> None:
    """The class to threshold (the stored one, else the rarest) and the threshold a button or a class sets."""
    @app.callback(Output("threshold-class", "options"), Output("threshold-class", "value"),
                  Output("threshold-class-label", "children"),
                  Input("run-select", "value"), *when_opened(TAB), State("chosen-thresholds", "data"))
    @inputs.guarded(inputs.keep, inputs.keep, inputs.hint)
    def pick_class(run_name, _opened, tab, chosen):
        inputs.shown(tab, TAB)
        run = inputs.run_of(store, run_name)
        k = len(run.class_names)
        options = [{"label": n, "value": i} for i, n in enumerate(run.class_names)]
        label = "Positive class" if k == 2 else "One-vs-rest class"
        stored = inputs.lenient(inputs.chosen_thresholds, chosen, {})  # update_threshold reports and resets it
        return options, positive_class(run.labels, k, stored.get(run.name)), label

    @app.callback(Output("threshold-slider", "value"), Output("threshold-note", "children"),
                  Input("threshold-class", "value"), Input("threshold-by-recall", "n_clicks"),
                  Input("threshold-by-cost", "n_clicks"), State("run-select", "value"),
                  State("threshold-recall", "value"), State("threshold-cost", "value"),
                  State("chosen-thresholds", "data"), State(corrected.SWITCH, "value"), prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def set_threshold(positive, _by_recall, _by_cost, run_name, recall, cost, chosen, label_set):
        if positive is None:
            raise PreventUpdate
        run = inputs.run_of(store, run_name)
        positive = inputs.class_index(positive, len(run.class_names))
        label_set = inputs.label_set(label_set)
        if ctx.triggered_id == "threshold-class":
            return restored_threshold(inputs.chosen_thresholds(chosen).get(run.name), positive), ""
        p, _ = corrected.predictions_for(run, label_set)  # a target recall of the labels the page shows
        return chosen_by(ctx.triggered_id, run, positive, recall, cost, labels=p.labels)


def _register_outputs(app, store) -> None:
    """The cards, matrix and curves at the slider's threshold, which is stored per run in ``chosen-thresholds``
    (emptied on an error: a malformed store would otherwise fail every later move)."""
    @app.callback(Output("threshold-cards", "children"), Output("threshold-cm", "figure"),
                  Output("threshold-roc", "figure"), Output("threshold-pr", "figure"),
                  Output("chosen-thresholds", "data"), Output("threshold-labels", "children"),
                  Input("threshold-slider", "value"), Input("threshold-class", "value"),
                  Input("run-select", "value"), *when_opened(TAB),
                  Input(corrected.SWITCH, "value"), Input(corrected.STAMP, "data"), State("chosen-thresholds", "data"))
    @inputs.guarded(inputs.hint, inputs.figure, inputs.figure, inputs.figure, inputs.constant({}), inputs.hint)
    def update_threshold(threshold, positive, run_name, _opened, tab, label_set, _reviews_saved, chosen):
        inputs.shown(tab, TAB)
        if positive is None or threshold is None:
            raise PreventUpdate  # the class list or the slider is not there yet
        run = inputs.run_of(store, run_name)
        positive = inputs.class_index(positive, len(run.class_names))
        threshold = inputs.probability(threshold)
        label_set = inputs.label_set(label_set)
        chosen = inputs.chosen_thresholds(chosen)
        chosen[run.name] = {"positive": positive, "threshold": threshold}
        p, s, problem = corrected.scored(run, label_set)
        return (*threshold_outputs(run.class_names, p, s.curves, positive, threshold), chosen,
                corrected.labels_in_use(run, p, label_set, problem))


def _register_export(app, store) -> None:
    @app.callback(Output("threshold-download", "data"), Output("threshold-export-note", "children"),
                  *[Input(f"threshold-export-{kind}", "n_clicks") for kind in export.THRESHOLD_KINDS],
                  State("run-select", "value"), State("threshold-class", "value"), State("threshold-slider", "value"),
                  State(corrected.SWITCH, "value"), prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def export_mistakes(_fn, _fp, run_name, positive, threshold, label_set):
        """The false negatives or false positives at the slider's threshold, on the label set in use, as CSV."""
        run = inputs.run_of(store, run_name)
        positive = inputs.class_index(positive, len(run.class_names))
        threshold = inputs.probability(threshold)
        kind = inputs.one_of(str(ctx.triggered_id).removeprefix("threshold-export-"), export.THRESHOLD_KINDS,
                             "export")
        labels = corrected.predictions_for(run, inputs.label_set(label_set))[0].labels
        frame = export.threshold_frame(run, positive, threshold, kind, labels)
        name = export.filename(run.name, run.class_names[positive], f"{kind}-at-{threshold:.4g}")
        return export.download(frame, name), ""
