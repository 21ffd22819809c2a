"""Can the map on screen be trusted? A card beside the explanations view's overlay (ids ``xp-faith-*``).

It shows the map's deletion and insertion AUC against random maps as smooth as it and an edge
detector, their curves, ROAD's MoRF / LeRF means and the verdict with its reasons, each measure
with one sentence saying what it means (:mod:`..map_faithfulness`), and the table as CSV. Scoring is
~680 forward passes at 32 px, so it runs only when the button is pressed; changing the image, method,
target, layer or parameters shows the new map's scores if they are cached and otherwise asks for the
button. Below it, the run's scoreboard of every method (:mod:`.scoreboard_table`).
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from .. import export, inputs
from ..cache import explain_cache
from ..explain_spec import parse_target
from ..figures import GRAPH_CONFIG, MODEBAR
from ..figures import score_text as sc
from . import scoreboard_table
from .explain_controls import PAGE_PARAMS, page_controls
from .explain_model import Controls, export_stem, heatmap, source_image
from .opened import when_opened

TAB = "explain"  # the explanations view's tab (views/explain.py imports this module)
_GRAPH = GRAPH_CONFIG
PROMPT = "Press “Score this map” to measure how faithful it is (about 680 model passes at 32 px)."
# the page's controls that choose the map, after the image: the inputs (scores) or states (CSV) of a callback
_MAP_CONTROLS = ("xp-image", "data"), ("xp-method", "value"), ("xp-target", "value"), ("xp-cam-layer", "value")
_PARAMS = [(f"xp-param-{p.name}", "value") for p in PAGE_PARAMS]


def card() -> html.Div:
    """The card's layout, placed under the overlay."""
    return html.Div(className="faithfulness", style={"marginTop": "12px"}, children=[
        html.Div(className="toolbar", children=[
            html.H4("Can this map be trusted?", style={"margin": 0}),
            html.Button("Score this map", id="xp-faith-run", n_clicks=0),
        ]),
        dcc.Loading(html.Div(id="xp-faith-scores", children=html.P(PROMPT, className="hint"))),
        scoreboard_table.section(),
    ])


def score(store, source: dict, controls: Controls, cache, compute: bool) -> dict | None:
    """The faithfulness scores of the map the view shows for ``source`` and ``controls``: cached ones,
    or with ``compute`` computed (ExplainError over the budget); None when not cached and not computed."""
    from .. import explain
    from ..map_faithfulness import cached_scores, map_faithfulness

    run, image, index, _ = source_image(store, source)
    settings = controls.settings().resolved(run.meta)
    probs = run.probs[index] if index is not None else explain.predict(run, image, cache)
    true = int(run.labels[index]) if index is not None else None
    target = parse_target(controls.target, run.class_names, int(np.argmax(probs)), true)
    if not compute:
        return cached_scores(run, image, target, settings, cache)
    return map_faithfulness(run, image, target, settings, heatmap(run, image, index, target, settings, cache), cache)


def curves_figure(scores: dict) -> go.Figure:
    """Deletion and insertion curves of the map (solid) and of the random maps' mean (dashed)."""
    fig = go.Figure()
    x = np.linspace(0, 1, scores["steps"] + 1)
    for measure, colour in (("deletion", "#c0392b"), ("insertion", "#3b6fb6")):
        for who, curve, dash in (("this map", scores[f"{measure}_curve"], "solid"),
                                 ("random", scores["random"][f"{measure}_curve"], "dash")):
            fig.add_trace(go.Scatter(x=x, y=curve, mode="lines", name=f"{measure}, {who}",
                                     line=dict(color=colour, dash=dash),
                                     hovertemplate=f"{measure}, {who}: %{{y:.2f}} at %{{x:.0%}}<extra></extra>"))
    fig.update_layout(height=240 + MODEBAR, margin=dict(l=10, r=10, t=MODEBAR, b=40), legend=dict(font=dict(size=10)),
                      xaxis=dict(title="fraction of pixels removed / restored", tickformat=".0%", range=[0, 1]),
                      yaxis=dict(title="target probability", range=[0, 1.02]))
    return fig


def _row(name: str, ours: str, random: str, edge: str, meaning: str) -> html.Tr:
    return html.Tr([html.Th(name), html.Td(ours), html.Td(random), html.Td(edge),
                    html.Td(meaning, className="hint")])


def table_rows(scores: dict) -> list[dict]:
    """The card's table, unrounded, one row per map (this map, the random maps' mean with their standard
    deviation, the edge map): deletion and insertion AUC, and ROAD's MoRF / LeRF means and gap (this map's)."""
    rnd, edge, road = scores["random"], scores["edge"], scores["road"]
    row = dict.fromkeys(("map", "deletion_auc", "deletion_auc_std", "insertion_auc", "insertion_auc_std",
                         "road_morf", "road_lerf", "road_gap"))
    return [
        {**row, "map": "this map", "deletion_auc": scores["deletion_auc"], "insertion_auc": scores["insertion_auc"],
         "road_morf": road["morf_mean"], "road_lerf": road["lerf_mean"], "road_gap": road["gap"]},
        {**row, "map": f"random ({rnd['kind']})", **{k: rnd[k] for k in (
            "deletion_auc", "deletion_auc_std", "insertion_auc", "insertion_auc_std")}},
        {**row, "map": "edge", "deletion_auc": edge["deletion_auc"], "insertion_auc": edge["insertion_auc"]},
    ]


def scores_children(scores: dict) -> list:
    """The verdict, a table of the measures with their meaning (and its CSV download), and the curves of ``scores``."""
    from ..map_faithfulness import MEANINGS

    rnd, edge, road, verdict = scores["random"], scores["edge"], scores["road"], scores["verdict"]
    table = html.Table(className="faithfulness-table", children=[
        html.Thead(html.Tr([html.Th(""), html.Th("this map"), html.Th(f"random ({rnd['kind']})"),
                            html.Th("edge"), html.Th("what it means")])),
        html.Tbody([
            *(_row(f"{m.capitalize()} AUC", sc(scores[f"{m}_auc"]),
                   f"{sc(rnd[f'{m}_auc'])} ± {sc(rnd[f'{m}_auc_std'])}", sc(edge[f"{m}_auc"]), MEANINGS[m])
              for m in ("deletion", "insertion")),
            _row("ROAD MoRF / LeRF",
                 f"{sc(road['morf_mean'])} / {sc(road['lerf_mean'])} (gap {sc(road['gap'], signed=True)})",
                 "", "", MEANINGS["road"]),
        ])])
    return [
        html.P([html.Strong(f"Verdict: {verdict['verdict']}", className="faithfulness-verdict")]),
        html.Ul([html.Li(r) for r in verdict["reasons"]], className="hint"),
        table,
        html.Div(className="toolbar", children=[
            html.Button("Download CSV", id="xp-faith-export", n_clicks=0, className="export",
                        title="the table unrounded, one row per map"),
            dcc.Download(id="xp-faith-download"), html.Span(id="xp-faith-export-note")]),
        html.P([MEANINGS["random"], " ", MEANINGS["edge"]], className="hint"),
        dcc.Graph(id="xp-faith-curves", config=_GRAPH, figure=curves_figure(scores)),
    ]


def _scored(store, source: dict, controls: Controls, compute: bool) -> dict | None:
    """:func:`score`, its refusals (the registry's limits, the budget, a busy model) as :class:`..inputs.BadInput`."""
    try:
        return score(store, source, controls, explain_cache(), compute)
    except (KeyError, ValueError) as e:  # ExplainError is a ValueError
        raise inputs.BadInput(str(e.args[0]) if e.args else str(e)) from None


def register_callbacks(app, store) -> None:
    @app.callback(Output("xp-faith-scores", "children"), Input("xp-faith-run", "n_clicks"),
                  *[Input(*c) for c in _MAP_CONTROLS], *when_opened(TAB), *[Input(*p) for p in _PARAMS])
    @inputs.guarded(inputs.hint)
    def scores(_clicks, source, method, target, layer, _opened, tab, *values):
        inputs.shown(tab, TAB)
        source, controls = page_controls(store, source, method, target, layer, values)
        found = _scored(store, source, controls, compute=ctx.triggered_id == "xp-faith-run")
        return scores_children(found) if found else html.P(PROMPT, className="hint")

    @app.callback(Output("xp-faith-download", "data"), Output("xp-faith-export-note", "children"),
                  Input("xp-faith-export", "n_clicks"), *[State(*c) for c in _MAP_CONTROLS + tuple(_PARAMS)],
                  prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def export_scores(clicks, source, method, target, layer, *values):
        """The table of the scores shown, as CSV: read from the cache the button filled, never recomputed."""
        if not clicks:  # the button drawn with the scores, not pressed
            raise PreventUpdate
        source, controls = page_controls(store, source, method, target, layer, values)
        found = _scored(store, source, controls, compute=False)
        if found is None:
            return no_update, PROMPT
        stem = export_stem(source, controls.method, found["target"], store.get(source["run"]).class_names)
        return export.download(export.table_frame(table_rows(found)), export.filename(stem, "faithfulness")), ""

    scoreboard_table.register_callbacks(app, store)
