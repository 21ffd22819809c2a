"""Explanations page: upload or pick an image, see the prediction, Grad-CAM (and other
attributions), a contrast view and the feature maps of any layer.

Callbacks are thin: they parse inputs and call :mod:`.explain_model`. The image being explained
lives in ``dcc.Store(id="xp-image")`` (chosen by :mod:`.explain_source`; its shape is in
``explain_model``); ids are prefixed ``xp-`` except the contract ids (``upload-image``,
``upload-error``, ``prediction-label``, ``gradcam-overlay``, ``layer-select``). The page's parts:
the controls (:mod:`.explain_controls`), the faithfulness card (:mod:`.faithfulness_card`), the
sanity check (:mod:`.explain_sanity`); the gallery's ``selected-image`` also fills ``detail-explain``
in the errors view (:mod:`.explain_detail`).
"""
from __future__ import annotations

from dash import Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from .. import inputs, uploads
from ..cache import explain_cache
from ..figures import GRAPH_CONFIG, empty_figure, placeholder
from ..gradcam_file import precomputed_problem
from ..images import DETAIL_SIZE
from ..methods import METHODS
from . import (
    explain_controls, explain_detail, explain_sanity, explain_source, faithfulness_card, neighbours, sidebyside,
)
from .explain_controls import (
    PAGE_PARAMS, cam_layer_options, field, layer_options, method_parameters, page_controls, target_options,
)
from .explain_model import build_feature_view, build_panel, method_options, probabilities_figure
from .job_button import register_job_button
from .map_view import IMG, contrast_tile, download, export_buttons, shown_map
from .opened import when_opened

TITLE = "Explanations"
TAB = __name__.rpartition(".")[2]  # the tab's value: app.create_app names each tab after its module
_GRAPH = GRAPH_CONFIG


def layout(store) -> html.Div:
    run = store.get(None)
    limit = uploads.max_upload_bytes()
    return html.Div(className="view explain-view", children=[
        *explain_source.stores(run.name, limit), dcc.Store(id="xp-warm"),
        html.Div(className="row", children=[_image_card(limit), _explanation_card(run)]),
        explain_sanity.sanity_card(),
        _feature_maps_card(),
    ])


def _image_card(limit: int) -> html.Div:
    """The image chosen (upload, test index), its prediction and probabilities, its nearest training images."""
    return html.Div(className="card", style={"flex": "1 1 330px"}, children=[
        html.H3("Image"),
        *explain_source.pickers(limit),
        html.Div(id="xp-source-label", className="hint", style={"margin": "8px 0 4px"}),
        html.Img(id="xp-input-image", width=DETAIL_SIZE, height=DETAIL_SIZE, alt="input image", style=IMG),
        html.H3(id="prediction-label", style={"margin": "10px 0 0"}),
        sidebyside.open_link("explain"),
        dcc.Graph(id="xp-probs", config=_GRAPH, figure=placeholder(260)),
        neighbours.panel("xp-neighbours"),
    ])


def _explanation_card(run) -> html.Div:
    """The controls, the overlay with its downloads and faithfulness, the contrast tiles, the precompute button."""
    return html.Div(className="card", style={"flex": "2 1 560px"}, children=[
        html.H3("Why this prediction"),
        explain_controls.toolbar(run),
        method_parameters(),
        html.Div(id="xp-method-note", className="hint"),
        html.Div(id="xp-controls-note"),
        html.Div(id="xp-explain-error", role="alert", style={"color": "#c0392b"}),
        html.Div(id="xp-sanity-badge"),
        shown_map("gradcam-overlay", "xp-overlay-scale", "xp-overlay-caption", "attribution overlay"),
        export_buttons("xp"),
        faithfulness_card.card(),
        html.H4("Contrast", style={"marginTop": "12px"}),
        html.Div(id="xp-contrast", style={"display": "flex", "gap": "12px", "flexWrap": "wrap"}),
        html.Div(style={"marginTop": "12px"}, children=[
            html.Button("Precompute Grad-CAM for this run", id="xp-precompute", n_clicks=0),
            html.Progress(id="xp-precompute-progress", value="0", max="100",
                          style={"width": "240px", "marginLeft": "12px", "verticalAlign": "middle"}),
            html.Span(id="xp-precompute-status", className="hint", style={"marginLeft": "10px"}),
            html.Div(id="xp-precompute-note", className="hint", role="status"),
            dcc.Interval(id="xp-precompute-poll", interval=1000, disabled=True),
        ]),
    ])


def _feature_maps_card() -> html.Div:
    return html.Div(className="card", children=[
        html.Div(className="toolbar", children=[
            html.H3("Feature maps"),
            field("Layer", dcc.Dropdown(id="layer-select", clearable=False), "320px"),
            dcc.Checklist(id="xp-fm-all", options=[{"label": " show all channels", "value": "all"}], value=[]),
        ]),
        html.Div(className="row", children=[
            html.Div(dcc.Graph(id="xp-fm-grid", config=_GRAPH), style={"flex": "3 1 480px"}),
            html.Div(dcc.Graph(id="xp-fm-contrib", config=_GRAPH), style={"flex": "2 1 360px"}),
        ]),
        dcc.Graph(id="xp-filters", config=_GRAPH),
    ])


def register_callbacks(app, store) -> None:
    cache = lambda: explain_cache()  # noqa: E731 - opened lazily, once per worker process
    explain_source.register_callbacks(app, store)
    explain_controls.register_callbacks(app, store)
    _register_run(app, store)
    _register_explanation(app, store, cache)
    _register_feature_maps(app, store)
    explain_detail.register_callbacks(app, store, cache)
    register_job_button(app, store, "gradcam", "xp-precompute", "xp-precompute")
    explain_sanity.register_callbacks(app, store)
    faithfulness_card.register_callbacks(app, store)


def _register_run(app, store) -> None:
    """What follows the selected run: its options and layers, its methods, its model warmed up."""
    @app.callback(Output("xp-target", "options"), Output("xp-cam-layer", "options"),
                  Output("xp-cam-layer", "value"), Output("layer-select", "options"),
                  Output("layer-select", "value"), Output("xp-test-index", "max"), Input("run-select", "value"),
                  State("xp-cam-layer", "value"))
    @inputs.guarded(*[inputs.keep] * 6)  # options and values hold no sentence: choose_source says what is wrong
    def on_run(run_name, cam_layer):
        run = inputs.run_of(store, run_name)
        cam = cam_layer_options(run.meta)
        if ctx.triggered_id is None:  # the page's first call: the layout holds the default run's options and
            # layer, a link's run (url_state) sends its own with its values; sent again here they could clear those
            return no_update, no_update, no_update, layer_options(run.meta), run.meta["gradcam_layer"], \
                len(run.labels) - 1
        # a layer the new run has too stays, else the run's own
        keep = cam_layer if cam_layer in [o["value"] for o in cam] else run.meta["gradcam_layer"]
        return (target_options(run.class_names), cam, keep, layer_options(run.meta),
                run.meta["gradcam_layer"], len(run.labels) - 1)

    @app.callback(Output("xp-method", "options"), Output("xp-method-note", "children"),
                  Output("xp-precompute-note", "children"), Input("run-select", "value"), *when_opened(TAB),
                  Input("xp-precompute-status", "children"))
    @inputs.guarded(inputs.keep, inputs.hint, inputs.constant(""))
    def on_model(run_name, _opened, tab, _precomputed):
        """Disable the methods this run's model does not support, saying why; flag an unusable gradcam.npz
        (again once the precompute button has rewritten it)."""
        inputs.shown(tab, TAB)
        from .. import explain

        run = inputs.run_of(store, run_name)
        unavailable = explain.unavailable_methods(run)
        note = " ".join(f"{METHODS[m].label} is unavailable: {reason}." for m, reason in unavailable.items())
        options = explain_sanity.flag_failing(method_options(unavailable), explain_sanity.failing_of(run))
        return options, note, precomputed_problem(run) or ""

    # torch, Captum and a model take ~2.5 s to load and nothing loads them at start-up; begin
    # once the overview is on screen (its cards just rendered), not while the page still loads.
    @app.callback(Output("xp-warm", "data"), Input("overview-cards", "children"), State("run-select", "value"),
                  prevent_initial_call=True)
    @inputs.guarded(inputs.keep)
    def warm_model(_cards, run_name):
        from .. import explain

        explain.warm(inputs.run_of(store, run_name))
        raise PreventUpdate


def _register_explanation(app, store, cache) -> None:
    """The prediction, overlay and contrast tiles of the chosen image and controls, and their downloads."""
    @app.callback(Output("prediction-label", "children"), Output("xp-probs", "figure"),
                  Output("gradcam-overlay", "src"), Output("xp-input-image", "src"),
                  Output("xp-source-label", "children"), Output("xp-explain-error", "children"),
                  Output("xp-contrast", "children"), Output("xp-overlay-scale", "figure"),
                  Output("xp-overlay-caption", "children"),
                  Input("xp-image", "data"), Input("xp-method", "value"), Input("xp-target", "value"),
                  Input("xp-cam-layer", "value"), Input("xp-opacity", "value"), *when_opened(TAB),
                  *[Input(f"xp-param-{p.name}", "value") for p in PAGE_PARAMS])
    @inputs.guarded(inputs.constant(""), inputs.constant(empty_figure("", height=260)), inputs.constant(""),
                    inputs.constant(""), inputs.constant(""), inputs.hint, inputs.constant([]),
                    inputs.constant(placeholder(DETAIL_SIZE)), inputs.constant(""))
    def render(source, method, target, layer, opacity, _opened, tab, *values):
        inputs.shown(tab, TAB)  # every tab's callbacks fire on page load; this one would load torch and a model
        panel = build_panel(store, *page_controls(store, source, method, target, layer, values, opacity), cache())
        if panel.error:  # the registry's limits, an unknown layer, a true class asked of an upload
            return ("", empty_figure("", height=260), "", panel.input_src, "", inputs.hint(panel.error), [],
                    placeholder(DETAIL_SIZE), "")
        return (panel.label, probabilities_figure(panel.probs, panel.class_names, panel.pred, panel.true),
                panel.overlay_src, panel.input_src, panel.description, "", [contrast_tile(t) for t in panel.contrast],
                panel.overlay.colorbar(),
                panel.overlay.caption)

    @app.callback(Output("xp-download", "data"), Output("xp-export-note", "children"),
                  Input("xp-export-png", "n_clicks"), Input("xp-export-npy", "n_clicks"),
                  State("xp-image", "data"), State("xp-method", "value"), State("xp-target", "value"),
                  State("xp-cam-layer", "value"), State("xp-opacity", "value"),
                  *[State(f"xp-param-{p.name}", "value") for p in PAGE_PARAMS], prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def export(_png, _npy, source, method, target, layer, opacity, *values):
        panel = build_panel(store, *page_controls(store, source, method, target, layer, values, opacity), cache(),
                            contrast=False)
        return download(panel, ctx.triggered_id)


def _register_feature_maps(app, store) -> None:
    @app.callback(Output("xp-fm-grid", "figure"), Output("xp-fm-contrib", "figure"), Output("xp-filters", "figure"),
                  Input("xp-image", "data"), Input("layer-select", "value"), Input("xp-fm-all", "value"),
                  *when_opened(TAB))
    @inputs.guarded(inputs.figure, inputs.figure, inputs.figure)
    def feature_maps(source, layer, show_all, _opened, tab):
        inputs.shown(tab, TAB)
        run, source = inputs.explained_image(store, source)
        layer = None if layer is None else inputs.one_of(layer, [e["name"] for e in run.meta["layers"]], "layer")
        show_all = "all" in inputs.checklist(show_all, ("all",), "the channels shown")
        view = build_feature_view(store, source, layer, show_all)
        return view.grid, view.contrib, view.filters or empty_figure("no convolution in this model", height=120)
