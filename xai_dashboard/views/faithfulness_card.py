"""Can the map on screen be trusted? A card beside the explanations view's overlay (ids ``xp-faith-*``).

It shows the map's deletion and insertion AUC against random maps as smooth as it and an edge
detector, their curves, ROAD's MoRF / LeRF means and the verdict with its reasons, each measure
with one sentence saying what it means (:mod:`..map_faithfulness`). Scoring is ~680 forward passes
at 32 px, so it runs only when the button is pressed; changing the image, method, target, layer or
parameters shows the new map's scores if they are cached and otherwise asks for the button.
Below it, the run's scoreboard of every method (:mod:`.scoreboard_table`).
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, ctx, dcc, html

from .. import inputs
from ..cache import explain_cache
from ..explain_spec import parse_target
from ..figures import GRAPH_CONFIG
from ..methods import METHODS, all_params
from . import scoreboard_table
from .explain_model import Controls, heatmap, source_image

TAB = "explain"  # the explanations view's tab (views/explain.py imports this module)
PAGE_PARAMS = [p for p in all_params().values() if p.in_page]  # the explanations view's "xp-param-<name>"
_GRAPH = GRAPH_CONFIG
PROMPT = "Press “Score this map” to measure how faithful it is (about 680 model passes at 32 px)."


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
    fig.update_layout(height=240, margin=dict(l=10, r=10, t=10, b=40), legend=dict(font=dict(size=10)),
                      xaxis=dict(title="fraction of pixels removed / restored", tickformat=".0%", range=[0, 1]),
                      yaxis=dict(title="target probability", range=[0, 1.02]))
    return fig


def _row(name: str, ours: str, random: str, edge: str, meaning: str) -> html.Tr:
    return html.Tr([html.Th(name), html.Td(ours), html.Td(random), html.Td(edge),
                    html.Td(meaning, className="hint")])


def scores_children(scores: dict) -> list:
    """The verdict, a table of the measures with their meaning, and the curves of ``scores``."""
    from ..map_faithfulness import MEANINGS

    rnd, edge, road, verdict = scores["random"], scores["edge"], scores["road"], scores["verdict"]
    table = html.Table(className="faithfulness-table", children=[
        html.Thead(html.Tr([html.Th(""), html.Th("this map"), html.Th(f"random ({rnd['kind']})"),
                            html.Th("edge"), html.Th("what it means")])),
        html.Tbody([
            *(_row(f"{m.capitalize()} AUC", f"{scores[f'{m}_auc']:.3f}",
                   f"{rnd[f'{m}_auc']:.3f} ± {rnd[f'{m}_auc_std']:.3f}", f"{edge[f'{m}_auc']:.3f}", MEANINGS[m])
              for m in ("deletion", "insertion")),
            _row("ROAD MoRF / LeRF", f"{road['morf_mean']:.3f} / {road['lerf_mean']:.3f} (gap {road['gap']:+.3f})",
                 "", "", MEANINGS["road"]),
        ])])
    return [
        html.P([html.Strong(f"Verdict: {verdict['verdict']}", className="faithfulness-verdict")]),
        html.Ul([html.Li(r) for r in verdict["reasons"]], className="hint"),
        table,
        html.P([MEANINGS["random"], " ", MEANINGS["edge"]], className="hint"),
        dcc.Graph(id="xp-faith-curves", config=_GRAPH, figure=curves_figure(scores)),
    ]


def register_callbacks(app, store) -> None:
    @app.callback(Output("xp-faith-scores", "children"),
                  Input("xp-faith-run", "n_clicks"), Input("xp-image", "data"), Input("xp-method", "value"),
                  Input("xp-target", "value"), Input("xp-cam-layer", "value"), Input("view-tabs", "value"),
                  *[Input(f"xp-param-{p.name}", "value") for p in PAGE_PARAMS])
    @inputs.guarded(inputs.hint)
    def scores(_clicks, source, method, target, layer, tab, *values):
        inputs.shown(tab, TAB)
        run, source = inputs.explained_image(store, source)
        controls = Controls(inputs.one_of(method, METHODS, "method"), inputs.target(target, len(run.class_names)),
                            layer, params={p.name: v for p, v in zip(PAGE_PARAMS, values)})
        try:
            found = score(store, source, controls, explain_cache(), compute=ctx.triggered_id == "xp-faith-run")
        except (KeyError, ValueError) as e:  # ExplainError: the registry's limits, the budget, a busy model
            raise inputs.BadInput(str(e.args[0]) if e.args else str(e)) from None
        return scores_children(found) if found else html.P(PROMPT, className="hint")

    scoreboard_table.register_callbacks(app, store)
