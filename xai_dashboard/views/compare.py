"""Run comparison: two runs on the same test images (``store.comparable``) side by
side: per-class accuracy, the difference of their confusion matrices, and the
images the second run fixes, breaks, or gets wrong together with the first."""
from __future__ import annotations

import numpy as np
from dash import Input, Output, dcc, html
from dash.exceptions import PreventUpdate

from .. import analysis, figures, summaries
from . import gallery_item

TITLE = "Compare runs"
TAB = __name__.rpartition(".")[2]  # the tab's value: app.create_app names each tab after its module
SHOWN = analysis.PAGE_SIZE
_GRAPH = {"displayModeBar": False}
SETS = (("fixed", "Errors fixed by B", "A wrong, B right"),
        ("introduced", "Errors introduced by B", "A right, B wrong"),
        ("both", "Errors both make", "A and B wrong"))


def layout(store) -> html.Div:
    return html.Div(className="view compare-view", children=[
        html.Div(className="card toolbar", children=[
            html.Label(["Run A", dcc.Dropdown(id="compare-a", clearable=False,
                                              options=store.names, value=store.default)], className="pick"),
            html.Label(["Run B", dcc.Dropdown(id="compare-b", clearable=False)], className="pick"),
            html.Div(id="compare-summary", className="compare-summary"),
        ]),
        html.Div(className="row", children=[
            html.Div(className="card half", children=[dcc.Graph(id="compare-accuracy", config=_GRAPH)]),
            html.Div(className="card half", children=[dcc.Graph(id="compare-cm-diff", config=_GRAPH)]),
        ]),
        *[html.Div(className="card gallery-card", children=[
            html.H3([title, " ", html.Span("0", id=f"compare-{key}-count", className="badge")], title=hint),
            html.Div(id=f"compare-{key}", className="gallery"),
        ]) for key, title, hint in SETS],
    ])


def order_set(idx: np.ndarray, probs_judge: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Most confident mistakes of the run that is wrong on ``idx`` first (its ``probs`` ``(N, K)``)."""
    return analysis.sort_indices(idx, labels, probs_judge, "confidence")


def _items(prefix, run_a, run_b, idx) -> list:
    names = run_a.class_names
    items = []
    for i in idx.tolist():
        t, pa, pb = int(run_a.labels[i]), int(run_a.preds[i]), int(run_b.preds[i])
        caption = [html.Span(names[t], className="lbl-true", title="true label"),
                   html.Span(f"A: {names[pa]}", className="lbl-pred " + ("wrong" if pa != t else "right")),
                   html.Span(f"B: {names[pb]}", className="lbl-pred " + ("wrong" if pb != t else "right"))]
        items.append(gallery_item(prefix, run_b, i, caption=caption, wrong=pb != t, clickable=False,
                                  caption_class="caption stacked",
                                  title=f"#{i}: true {names[t]}; A {names[pa]} ({run_a.probs[i, pa]:.0%}), "
                                        f"B {names[pb]} ({run_b.probs[i, pb]:.0%})"))
    return items or [html.P("None.", className="hint")]


def register_callbacks(app, store) -> None:
    prefix = app.config.requests_pathname_prefix

    @app.callback(Output("compare-a", "value"), Input("run-select", "value"))
    def follow_selector(run_name):
        return run_name

    @app.callback(Output("compare-b", "options"), Output("compare-b", "value"),
                  Input("compare-a", "value"), Input("compare-b", "value"))
    def candidates(a, b):
        options = store.comparable(a) if a else []
        return options, (b if b in options else (options[0] if options else None))

    outputs = [Output("compare-summary", "children"), Output("compare-accuracy", "figure"),
               Output("compare-cm-diff", "figure")]
    for key, _, _ in SETS:
        outputs += [Output(f"compare-{key}", "children"), Output(f"compare-{key}-count", "children")]

    # Gated on the active tab ("view-tabs" in app.py): a comparison costs a few hundred ms of
    # figures, which a page load should not pay while the tab is hidden.
    @app.callback(*outputs, Input("compare-a", "value"), Input("compare-b", "value"), Input("view-tabs", "value"))
    def update_comparison(a, b, tab):
        if tab != TAB:
            raise PreventUpdate
        if not a or not b or b not in store.comparable(a):
            msg = "Load a second run evaluated on the same test images to compare (e.g. xai-dashboard RUN_A RUN_B)."
            empty = figures.empty_figure("Nothing to compare")
            return [msg, empty, empty] + [[html.P("—", className="hint")], "0"] * len(SETS)
        ra, rb = store.get(a), store.get(b)
        pa, pb = analysis.predictions_of(ra), analysis.predictions_of(rb)
        names = ra.class_names
        sa, sb = summaries.summary_of(ra), summaries.summary_of(rb)
        sets = analysis.compare(pa, pb)
        acc_a = [r["recall"] for r in sa.per_class]
        acc_b = [r["recall"] for r in sb.per_class]
        delta = sb.overall["accuracy"] - sa.overall["accuracy"]
        summary = (f"A = {a} ({sa.overall['accuracy']:.2%}), B = {b} ({sb.overall['accuracy']:.2%}): "
                   f"B is {abs(delta):.2%} {'better' if delta >= 0 else 'worse'}; "
                   f"fixes {len(sets['fixed']):,}, introduces {len(sets['introduced']):,}, "
                   f"shares {len(sets['both']):,} errors. Showing the {SHOWN} most confident of each.")
        out = [summary, figures.compare_accuracy_figure(names, acc_a, acc_b, a, b),
               figures.confusion_diff_figure(sb.cm - sa.cm, names, a, b)]
        for key, _, _ in SETS:
            judge = ra if key == "fixed" else rb  # rank by the confidence of whichever run is wrong
            idx = order_set(sets[key], judge.probs, ra.labels)[:SHOWN]
            out += [_items(prefix, ra, rb, idx), str(len(sets[key]))]
        return out
