"""The explanations view's sanity check (Adebayo et al.'s model randomisation, ``sanity.json``):
the cascade plot of every method in its own card, and the badge that flags a method failing it
beside the overlay, in the method dropdowns and in the gallery detail (ids ``xp-sanity-*``).
"""
from __future__ import annotations

from dash import Input, Output, dcc, html

from .. import inputs
from ..figures import GRAPH_CONFIG, empty_figure, placeholder
from ..methods import METHODS
from ..sanity_file import BADGE, REFERENCE, THRESHOLD, badge_title, failing_methods
from .explain_model import cascade_figure, sanity_data
from .opened import when_opened

TAB = "explain"  # the explanations view's tab


def sanity_card() -> html.Div:
    """The model-randomisation cascade of every method (from the run's sanity.json)."""
    return html.Div(className="card", children=[
        html.Div(className="toolbar", children=[
            html.H3("Sanity check: model randomisation"),
            dcc.RadioItems(id="xp-sanity-metric", value="spearman", inline=True, className="radio", options=[
                {"label": "Spearman rank correlation", "value": "spearman"}, {"label": "SSIM", "value": "ssim"}]),
        ]),
        html.P("The model's layers are re-initialised at random from the head down; a method whose maps stay "
               f"similar to the trained model's (mean Spearman > {THRESHOLD} after every layer) does not explain "
               f"what the model learned. {REFERENCE}.", className="hint"),
        html.Div(id="xp-sanity-note", className="hint", role="status"),
        dcc.Graph(id="xp-sanity-plot", config=GRAPH_CONFIG, figure=placeholder(340)),
    ])


def sanity_badge(method: str, failing: dict[str, float]) -> list:
    """The badge and its one-line explanation for ``method`` if it is in ``failing`` ({method: similarity}); else []."""
    if method not in failing:
        return []
    why = badge_title(failing[method])
    return [html.Div(className="warning", role="status", title=why, children=[
        html.Span(BADGE, className="badge sanity-badge", style={"borderColor": "#c0392b", "color": "#c0392b"}),
        " ", why])]


def flag_failing(options: list[dict], failing: dict[str, float]) -> list[dict]:
    """Method dropdown ``options`` with the badge in the label and its explanation in the tooltip of failing methods."""
    return [{**o, "label": f"{o['label']} ⚠ {BADGE}", "title": badge_title(failing[o["value"]])}
            if o["value"] in failing else o for o in options]


def failing_of(run) -> dict[str, float]:
    """``{method: similarity}`` of the methods failing ``run``'s randomisation check (none without sanity.json)."""
    return failing_methods(sanity_data(run)[0])


def register_callbacks(app, store) -> None:
    @app.callback(Output("xp-sanity-plot", "figure"), Output("xp-sanity-note", "children"),
                  Input("run-select", "value"), Input("xp-sanity-metric", "value"), *when_opened(TAB))
    @inputs.guarded(inputs.figure, inputs.hint)
    def cascade(run_name, metric, _opened, tab):
        inputs.shown(tab, TAB)
        run = inputs.run_of(store, run_name)
        metric = inputs.one_of(metric, ("spearman", "ssim"), "similarity")
        data, problem = sanity_data(run)
        if data is None:
            return empty_figure("no sanity check for this run", height=340), problem
        return cascade_figure(data, metric), problem

    @app.callback(Output("xp-sanity-badge", "children"), Input("xp-method", "value"), Input("run-select", "value"),
                  *when_opened(TAB))
    @inputs.guarded(inputs.hint)
    def badge(method, run_name, _opened, tab):
        inputs.shown(tab, TAB)
        method = inputs.one_of(method, METHODS, "method")
        return sanity_badge(method, failing_of(inputs.run_of(store, run_name)))
