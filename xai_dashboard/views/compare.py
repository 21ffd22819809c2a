"""Run comparison: two runs on the same test images (``store.comparable``) side by
side: accuracy *and* balanced accuracy with the classes each finds more of, both runs
at their chosen decision thresholds (Threshold tab), per-class accuracy, the
difference of their confusion matrices, and the images the second run fixes,
breaks, or gets wrong together with the first, paged on the server. A thumbnail
click opens its detail (run A's) on the errors tab, in the browser.

Every figure, table and set follows the header's label-set switch (:mod:`..corrected`):
both runs are on the same test images, so they share one reviews file and are scored on
the same reviewed labels; the summary says which labels are in use."""
from __future__ import annotations

import numpy as np
from dash import ALL, ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from .. import analysis, corrected, export, figures, inputs, thresholds
from . import gallery_item
from . import stress as stress_view
from .opened import TABS, when_opened

TITLE = "Compare runs"
TAB = __name__.rpartition(".")[2]  # the tab's value: app.create_app names each tab after its module
_GRAPH = figures.GRAPH_CONFIG
SETS = (("fixed", "Errors fixed by B", "A wrong, B right"),
        ("introduced", "Errors introduced by B", "A right, B wrong"),
        ("both", "Errors both make", "A and B wrong"))


def layout(store) -> html.Div:
    return html.Div(className="view compare-view", children=[
        html.Div(className="card toolbar", children=[
            html.Label(["Run A", dcc.Dropdown(id="compare-a", clearable=False,
                                              options=store.names, value=store.default)], className="pick"),
            html.Label(["Run B", dcc.Dropdown(id="compare-b", clearable=False, options=store.comparable(store.default),
                                              value=(store.comparable(store.default) or [None])[0])],
                       className="pick"),
            html.Div(id="compare-summary", className="compare-summary"),
            html.Span(id="compare-export-note"),
            dcc.Download(id="compare-download"),
        ]),
        html.Div(className="card", children=[html.Div(className="toolbar", children=[
                                                 html.H3("At each run's chosen threshold"),
                                                 html.Button("Download CSV", id="compare-thresholds-export",
                                                             n_clicks=0, className="export")]),
                                             html.Div(id="compare-thresholds")]),
        html.Div(className="row", children=[
            html.Div(className="card half", children=[dcc.Graph(id="compare-accuracy", config=_GRAPH)]),
            html.Div(className="card half", children=[dcc.Graph(id="compare-cm-diff", config=_GRAPH)]),
        ]),
        stress_view.compare_card(),
        *[html.Div(className="card gallery-card", children=[
            dcc.Store(id=f"compare-{key}-page", data=0),
            html.Div(className="toolbar", children=[
                html.H3([title, " ", html.Span("0", id=f"compare-{key}-count", className="badge")], title=hint),
                html.Div(className="pager", children=[
                    html.Button("‹ Prev", id=f"compare-{key}-prev", n_clicks=0),
                    html.Span("1 / 1", id=f"compare-{key}-page-label"),
                    html.Button("Next ›", id=f"compare-{key}-next", n_clicks=0),
                ]),
                html.Button("Download CSV", id=f"compare-{key}-export", n_clicks=0, className="export"),
            ]),
            html.Div(id=f"compare-{key}", className="gallery"),
        ]) for key, title, hint in SETS],
    ])


def _points(delta: float) -> str:
    return f"{delta * 100:+.2f} pts"


def headline(a: str, b: str, oa: dict, ob: dict) -> str:
    """Accuracy, balanced accuracy and macro F1 of A and B with B's deltas, and a verdict that never
    rests on accuracy alone (on imbalanced data always answering the majority class scores well)."""
    d_acc, d_bal = ob["accuracy"] - oa["accuracy"], ob["balanced_accuracy"] - oa["balanced_accuracy"]
    if d_acc >= 0 and d_bal >= 0:
        verdict = "B is better on both" if d_acc or d_bal else "no difference"
    elif d_acc <= 0 and d_bal <= 0:
        verdict = "B is worse on both"
    else:
        verdict = ("accuracy and balanced accuracy disagree: on imbalanced data trust balanced accuracy "
                   "and the per-class counts")
    return (f"A = {a}, B = {b}. Accuracy {oa['accuracy']:.2%} → {ob['accuracy']:.2%} ({_points(d_acc)}); "
            f"balanced accuracy {oa['balanced_accuracy']:.2%} → {ob['balanced_accuracy']:.2%} ({_points(d_bal)}); "
            f"macro F1 {oa['f1']:.3f} → {ob['f1']:.3f}; MCC {oa['mcc']:.3f} → {ob['mcc']:.3f}. {verdict}.")


def found_changes(rows_a: list[dict], rows_b: list[dict], top: int = 5) -> list[str]:
    """Classes whose correctly found count differs most between A and B (per-class rows of each run)."""
    diffs = [(rb["found"] - ra["found"], i) for i, (ra, rb) in enumerate(zip(rows_a, rows_b))
             if rb["found"] != ra["found"]]
    diffs.sort(key=lambda d: (-abs(d[0]), d[1]))
    return [f"B finds {rows_b[i]['found']:,} of {rows_b[i]['support']:,} '{rows_b[i]['class']}' vs "
            f"{rows_a[i]['found']:,} for A" for _, i in diffs[:top]]


def threshold_rows(runs: list, positive: int, chosen: dict, labels: np.ndarray | None = None) -> list[dict]:
    """One row per run: its threshold for ``positive`` (chosen on the Threshold tab, else 0.5) and the
    metrics at it (:func:`~xai_dashboard.thresholds.metrics_at`) on ``labels`` int ``(N,)``, the label set in
    use shared by the runs (the reviewed labels); default each run's own ``labels``."""
    rows = []
    for run in runs:
        entry = chosen.get(run.name) or {}
        mine = entry.get("positive") == positive and entry.get("threshold") is not None
        t = float(entry["threshold"]) if mine else thresholds.DEFAULT_THRESHOLD
        y = (run.labels if labels is None else labels) == positive
        m = thresholds.metrics_at(y, run.probs[:, positive], t)
        rows.append({"run": run.name, "threshold": f"{t:.4g}" + ("" if mine else " (default)"),
                     "found": f"{m['tp']:,} of {m['positives']:,}", "recall": m["recall"],
                     "precision": m["precision"], "f1": m["f1"], "balanced_accuracy": m["balanced_accuracy"],
                     "mcc": m["mcc"], "prevalence": m["prevalence"]})
    return rows


def _compared_class(ra, chosen: dict, labels: np.ndarray) -> tuple[int, str | None]:
    """The class both runs are thresholded for (run A's chosen one, else its rarest on its original labels,
    as the Threshold tab picks it) and why there is no table for it on ``labels`` (None when there is one)."""
    k = len(ra.class_names)
    positive = (chosen.get(ra.name) or {}).get("positive")
    positive = positive if positive is not None and 0 <= positive < k else thresholds.minority_class(ra.labels, k)
    y = labels == positive
    return positive, (f"'{ra.class_names[positive]}' has no test images to threshold."
                      if y.all() or not y.any() else None)


def _threshold_table(ra, rb, chosen: dict, labels: np.ndarray):
    """``chosen`` as parsed by :func:`~xai_dashboard.inputs.chosen_thresholds`; ``labels`` the label set in use."""
    k = len(ra.class_names)
    positive, problem = _compared_class(ra, chosen, labels)
    if problem:
        return html.P(problem, className="warning")
    rows = threshold_rows([ra, rb], positive, chosen, labels)
    cols = ["run", "threshold", "found", "recall", "precision", "f1", "balanced_accuracy", "mcc", "prevalence"]
    fmt = {"recall": "{:.3f}", "precision": "{:.3f}", "f1": "{:.3f}", "balanced_accuracy": "{:.2%}",
           "mcc": "{:.3f}", "prevalence": "{:.2%}"}
    head = html.Tr([html.Th(c.replace("_", " ")) for c in cols])
    body = [html.Tr([html.Td(fmt.get(c, "{}").format(r[c])) for c in cols]) for r in rows]
    kind = "positive class" if k == 2 else "one-vs-rest class"
    return html.Div([html.P(f"{kind}: '{ra.class_names[positive]}'. Set a run's threshold on the Threshold tab "
                            "(target recall, cost ratio or the slider); unset ones use 0.5.", className="hint"),
                     html.Table([head, *body], className="kv compare-thresholds")])


def _items(prefix, run_a, run_b, idx, labels: np.ndarray) -> list:
    """Thumbnails of ``idx`` captioned with ``labels`` (the label set in use) and both runs' predictions."""
    names = run_a.class_names
    items = []
    for i in idx.tolist():
        t, pa, pb = int(labels[i]), int(run_a.preds[i]), int(run_b.preds[i])
        caption = [html.Span(names[t], className="lbl-true", title="true label"),
                   html.Span(f"A: {names[pa]}", className="lbl-pred " + ("wrong" if pa != t else "right")),
                   html.Span(f"B: {names[pb]}", className="lbl-pred " + ("wrong" if pb != t else "right"))]
        items.append(gallery_item(prefix, run_b, i, caption=caption, wrong=pb != t, kind="compare-item",
                                  caption_class="caption stacked",
                                  title=f"#{i}: true {names[t]}; A {names[pa]} ({run_a.probs[i, pa]:.0%}), "
                                        f"B {names[pb]} ({run_b.probs[i, pb]:.0%})"))
    return items or [html.P("None.", className="hint")]


def register_callbacks(app, store) -> None:
    prefix = app.config.requests_pathname_prefix
    _register_runs(app, store)
    _register_comparison(app, store)
    _register_export(app, store)
    for key, _, _ in SETS:
        _register_gallery(app, store, key, prefix)
    # a thumbnail's detail: run A's, in the errors view (no request: the store and the tab are set here)
    app.clientside_callback(ClientsideFunction("xai", "openFromCompare"),
                            Output("selected-image", "data", allow_duplicate=True),
                            Output(TABS, "value", allow_duplicate=True),
                            Input({"type": "compare-item", "index": ALL}, "n_clicks"), State("compare-a", "value"),
                            prevent_initial_call=True)
    stress_view.register_compare(app, store)


def _register_runs(app, store) -> None:
    """Run A follows the header's run selector; run B is one of those evaluated on A's test images."""
    # not at page load (the layout holds the default run): that first answer could reset a link's run B
    @app.callback(Output("compare-a", "value"), Input("run-select", "value"), prevent_initial_call=True)
    @inputs.guarded(inputs.keep)
    def follow_selector(run_name):
        return inputs.run_of(store, run_name).name

    # the layout holds the default run's candidates: a link's run B (url_state) is not overwritten on load
    @app.callback(Output("compare-b", "options"), Output("compare-b", "value"),
                  Input("compare-a", "value"), Input("compare-b", "value"), prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.keep)
    def candidates(a, b):
        options = store.comparable(inputs.run_of(store, a).name)
        # a run B that still fits is left alone: set again it could overwrite a link's, set meanwhile
        return options, (no_update if b in options else (options[0] if options else None))


def _pair(store, a, b, tab):
    """The two runs, or None when there is no second run to compare with; PreventUpdate while the tab
    is hidden. B must have been evaluated on A's test images (``store.comparable``)."""
    inputs.shown(tab, TAB)
    ra = inputs.run_of(store, a)
    if b is None:
        return None
    rb = inputs.run_of(store, b)
    if rb.name not in store.comparable(ra.name):
        raise inputs.BadInput(f"runs {ra.name!r} and {rb.name!r} were not evaluated on the same test images")
    return ra, rb


def _register_comparison(app, store) -> None:
    """The headline, the threshold table and the two figures; drawn when the tab opens (:mod:`.opened`): a
    comparison costs a few hundred ms of figures, which a page load should not pay while the tab is hidden.
    The thresholds are read, not listened to: only the Threshold tab sets them, never while this one is shown."""
    @app.callback(Output("compare-summary", "children"), Output("compare-thresholds", "children"),
                  Output("compare-accuracy", "figure"), Output("compare-cm-diff", "figure"),
                  Input("compare-a", "value"), Input("compare-b", "value"), *when_opened(TAB),
                  State("chosen-thresholds", "data"), Input(corrected.SWITCH, "value"), Input(corrected.STAMP, "data"))
    @inputs.guarded(inputs.hint, inputs.constant(html.P("—", className="hint")), inputs.figure, inputs.figure)
    def update_comparison(a, b, _opened, tab, chosen, label_set, _reviews_saved):
        runs = _pair(store, a, b, tab)
        # The Threshold tab reports a malformed store and empties it; here it only means "none chosen".
        chosen = inputs.lenient(inputs.chosen_thresholds, chosen, {})
        label_set = inputs.label_set(label_set)
        if runs is None:
            msg = "Load a second run evaluated on the same test images to compare (e.g. xai-dashboard RUN_A RUN_B)."
            empty = figures.empty_figure("Nothing to compare")
            return msg, html.P("—", className="hint"), empty, empty
        ra, rb = runs
        # one test set, so one reviews file: both runs are scored on the same labels
        (pa, sa, problem), (_, sb, _) = (corrected.scored(r, label_set) for r in runs)
        changes = found_changes(sa.per_class, sb.per_class)
        summary = [corrected.labels_in_use(ra, pa, label_set, problem),
                   html.P(headline(ra.name, rb.name, sa.overall, sb.overall)),
                   html.Ul([html.Li(c) for c in changes]) if changes else html.P("Both find the same number "
                                                                                  "of images of every class.")]
        acc_a, acc_b = [r["recall"] for r in sa.per_class], [r["recall"] for r in sb.per_class]
        return (summary, _threshold_table(ra, rb, chosen, pa.labels),
                figures.compare_accuracy_figure(ra.class_names, acc_a, acc_b, ra.name, rb.name),
                figures.confusion_diff_figure(sb.cm - sa.cm, ra.class_names, ra.name, rb.name))


def _register_export(app, store) -> None:
    @app.callback(Output("compare-download", "data"), Output("compare-export-note", "children"),
                  *[Input(f"compare-{key}-export", "n_clicks") for key in (*[k for k, _, _ in SETS], "thresholds")],
                  State("compare-a", "value"), State("compare-b", "value"), State("chosen-thresholds", "data"),
                  State(corrected.SWITCH, "value"), prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def export_set(_fixed, _introduced, _both, _thresholds, a, b, chosen, label_set):
        """The comparison set (A's and B's predictions side by side) or the threshold table, on the label set
        in use, whichever button was clicked, as CSV."""
        runs = _pair(store, a, b, TAB)  # a click on the tab's own button: the tab is shown
        if runs is None:
            raise inputs.BadInput("there is no second run to compare with")
        key = inputs.one_of(str(ctx.triggered_id).removeprefix("compare-").removesuffix("-export"),
                            [*[k for k, _, _ in SETS], "thresholds"], "comparison set")
        label_set = inputs.label_set(label_set)
        name = export.filename(runs[0].name, runs[1].name, key)
        labels = corrected.predictions_for(runs[0], label_set)[0].labels
        if key != "thresholds":
            return export.download(export.comparison_frame(*runs, key, labels), name), ""
        chosen = inputs.lenient(inputs.chosen_thresholds, chosen, {})
        positive, problem = _compared_class(runs[0], chosen, labels)
        if problem:
            raise inputs.BadInput(problem)
        return export.download(export.table_frame(threshold_rows(list(runs), positive, chosen, labels)), name), ""


def _register_gallery(app, store, key: str, prefix: str) -> None:
    """One set's gallery, paged on the server: only the shown page's thumbnails are sent."""
    @app.callback(Output(f"compare-{key}", "children"), Output(f"compare-{key}-count", "children"),
                  Output(f"compare-{key}-page", "data"), Output(f"compare-{key}-page-label", "children"),
                  Input("compare-a", "value"), Input("compare-b", "value"), *when_opened(TAB),
                  Input(f"compare-{key}-prev", "n_clicks"), Input(f"compare-{key}-next", "n_clicks"),
                  Input(corrected.SWITCH, "value"), Input(corrected.STAMP, "data"),
                  State(f"compare-{key}-page", "data"))
    @inputs.guarded(inputs.hint, inputs.constant("0"), inputs.constant(0), inputs.constant("1 / 1"))
    def update_gallery(a, b, _opened, tab, _prev, _next, label_set, _reviews_saved, page):
        runs = _pair(store, a, b, tab)
        if runs is None:
            return [html.P("—", className="hint")], "0", 0, "1 / 1"
        ra, rb = runs
        label_set = inputs.label_set(label_set)
        step = {f"compare-{key}-prev": -1, f"compare-{key}-next": 1}.get(ctx.triggered_id, 0)
        # a new pair of runs (or label set) starts on the first page; coming back to the tab keeps the page
        page = 0 if ctx.triggered_id in ("compare-a", "compare-b", corrected.SWITCH) else inputs.page(page) + step
        labels = corrected.predictions_for(ra, label_set)[0].labels  # one test set, so one reviews file
        idx = export.comparison_set(ra, rb, key, labels)
        shown, page, pages = analysis.page_of(idx, page)
        return _items(prefix, ra, rb, shown, labels), str(len(idx)), page, f"{page + 1} / {pages}"
