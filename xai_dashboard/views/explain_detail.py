"""The explanation in the gallery's image detail (the errors view's ``detail-explain``): a method and
target picker, the overlay with its colour bar and caption, its downloads and the side-by-side link
(ids ``xp-detail-*``). The image's labels are the errors view's caption above it.
"""
from __future__ import annotations

from dash import Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from .. import inputs
from ..figures import placeholder
from ..images import DETAIL_SIZE
from ..methods import METHODS
from . import sidebyside
from .explain_model import Controls, build_panel, method_options
from .explain_sanity import failing_of, flag_failing, sanity_badge
from .map_view import download, export_buttons, shown_map


def detail_children(unavailable: dict[str, str] | None = None, failing: dict[str, float] | None = None) -> list:
    """The detail's children for a gallery image; ``unavailable``: method -> why this run's model does not
    support it; ``failing``: method -> similarity, for the methods that fail the run's randomisation check
    (flagged, as on the tab)."""
    return [
        html.Div(className="toolbar", children=[
            dcc.Dropdown(id="xp-detail-method", value="gradcam", clearable=False,
                         options=flag_failing(method_options(unavailable), failing or {}), style={"width": "200px"}),
            dcc.RadioItems(id="xp-detail-target", value="pred", inline=True, className="radio", options=[
                {"label": "predicted", "value": "pred"}, {"label": "true", "value": "true"},
                {"label": "predicted − true", "value": "contrast"}]),
        ]),
        shown_map("xp-detail-overlay", "xp-detail-scale", "xp-detail-caption", "attribution overlay"),
        export_buttons("xp-detail"),
        sidebyside.open_link("gallery"),
    ]


def detail_controls(store, method, target, selected) -> tuple[dict, Controls]:
    """The gallery detail's inputs, checked: ``(source, Controls)``; PreventUpdate when no image is selected."""
    chosen = inputs.selected_image(store, selected)
    if chosen is None:
        raise PreventUpdate
    return {"kind": "test", "run": selected["run"], "index": chosen[1]}, Controls(
        inputs.one_of(method, METHODS, "method"), inputs.one_of(target, ("pred", "true", "contrast"), "target"))


def register_callbacks(app, store, cache) -> None:
    """``cache``: a function returning the explanation cache (opened lazily, once per worker process)."""
    @app.callback(Output("detail-explain", "children"), Input("selected-image", "data"))
    @inputs.guarded(inputs.hint)
    def detail(selected):
        chosen = inputs.selected_image(store, selected)
        if chosen is None:
            return []
        from .. import explain

        run = chosen[0]
        return detail_children(explain.unavailable_methods(run), failing_of(run))

    @app.callback(Output("xp-detail-overlay", "src"), Output("xp-detail-caption", "children"),
                  Output("xp-detail-scale", "figure"),
                  Input("xp-detail-method", "value"), Input("xp-detail-target", "value"),
                  State("selected-image", "data"))
    @inputs.guarded(inputs.constant(""), inputs.hint, inputs.constant(placeholder(DETAIL_SIZE)))
    def detail_overlay(method, target, selected):
        source, controls = detail_controls(store, method, target, selected)
        panel = build_panel(store, source, controls, cache(), contrast=False)
        if panel.error:
            return "", panel.error, placeholder(DETAIL_SIZE)
        failing = failing_of(store.get(source["run"]))
        return panel.overlay_src, [*sanity_badge(controls.method, failing), panel.overlay.caption], \
            panel.overlay.colorbar()

    @app.callback(Output("xp-detail-download", "data"), Output("xp-detail-export-note", "children"),
                  Input("xp-detail-export-png", "n_clicks"), Input("xp-detail-export-npy", "n_clicks"),
                  State("xp-detail-method", "value"), State("xp-detail-target", "value"),
                  State("selected-image", "data"), prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def detail_export(_png, _npy, method, target, selected):
        panel = build_panel(store, *detail_controls(store, method, target, selected), cache(), contrast=False)
        return download(panel, ctx.triggered_id)
