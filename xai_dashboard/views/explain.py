"""Explanations page: upload or pick an image, see the prediction, Grad-CAM (and other
attributions), a contrast view and the feature maps of any layer.

Callbacks are thin: they parse inputs and call :mod:`.explain_model`. The image
being explained lives in ``dcc.Store(id="xp-image")`` (see ``explain_model`` for
its shape); ids are prefixed ``xp-`` except the contract ids (``upload-image``,
``upload-error``, ``prediction-label``, ``gradcam-overlay``, ``layer-select``).
The gallery's ``selected-image`` also fills ``detail-explain`` in the errors view.
"""
from __future__ import annotations

from dash import Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from .. import explain_spec, inputs, uploads
from ..cache import explain_cache
from ..figures import GRAPH_CONFIG, empty_figure, placeholder
from ..gradcam_file import precomputed_problem
from ..images import DETAIL_SIZE
from ..methods import METHODS, all_params
from ..sanity_file import BADGE, REFERENCE, THRESHOLD, badge_title, failing_methods
from . import faithfulness_card, neighbours, sidebyside
from .explain_model import (
    Controls, build_feature_view, build_panel, cascade_figure, ignored_because, method_options, probabilities_figure,
    sanity_data, source_for_run, upload_to_source,
)
from .map_view import contrast_tile, download, export_buttons, shown_map

TITLE = "Explanations"
TAB = __name__.rpartition(".")[2]  # the tab's value: app.create_app names each tab after its module
_GRAPH = GRAPH_CONFIG
_IMG = {"imageRendering": "pixelated", "border": "1px solid #e4e7eb", "borderRadius": "4px"}
PAGE_PARAMS = [p for p in all_params().values() if p.in_page]  # one input each, id "xp-param-<name>"


def _field(label: str, component, width: str = "190px", **extra) -> html.Label:
    """``component`` under its ``label``; ``extra``: the label's own props (an ``id`` to set its tooltip)."""
    return html.Label([html.Span(label, className="hint", style={"display": "block"}), component],
                      style={"display": "inline-block", "width": width, "marginRight": "12px"}, **extra)


# dcc.Upload drops files over max_size or outside accept without telling the server, so
# this listener (attached once, on the document, so it works whenever the tab mounts)
# puts the same message in upload-error that the server would have given.
_UPLOAD_GUARD_JS = """
function(limit) {
    if (window.__xpUploadGuard) { return window.dash_clientside.no_update; }
    window.__xpUploadGuard = true;
    const types = ["image/png", "image/jpeg", "image/webp"];
    const names = /\\.(png|jpe?g|webp)$/i;
    const check = (target, files) => {
        if (!target || !target.closest || !target.closest("#upload-image") || !files || !files.length) { return; }
        const f = files[0];
        let msg = "";
        if (f.size > limit) {
            msg = f.name + ": the file is " + (f.size / 1048576).toFixed(1) + " MB; the limit is "
                + (limit / 1048576).toFixed(1) + " MB";
        } else if (!(types.includes(f.type) || names.test(f.name))) {
            msg = f.name + ": unsupported file type; upload a PNG, JPEG or WebP image";
        }
        if (msg) { window.dash_clientside.set_props("upload-error", {children: msg}); }
    };
    document.addEventListener("change", e => check(e.target, e.target && e.target.files), true);
    document.addEventListener("drop", e => check(e.target, e.dataTransfer && e.dataTransfer.files), true);
    return true;
}
"""


def _method_parameters() -> html.Details:
    """One number input per registered parameter, with the registry's limits and default."""
    return html.Details([html.Summary("Method parameters", className="hint"), html.Div(className="toolbar", children=[
        _field(p.label, dcc.Input(id=f"xp-param-{p.name}", type="number", min=p.lo, max=p.hi, step=1, value=p.default,
                                  debounce=True, style={"width": "90px"}), "130px", id=f"xp-param-{p.name}-field")
        for p in PAGE_PARAMS])])


def layout(store) -> html.Div:
    run = store.get(None)
    limit = uploads.max_upload_bytes()
    return html.Div(className="view explain-view", children=[
        dcc.Store(id="xp-image", data={"kind": "test", "run": run.name, "index": 0}),
        dcc.Store(id="xp-upload-limit", data=limit), dcc.Store(id="xp-upload-guard"), dcc.Store(id="xp-warm"),
        html.Div(className="row", children=[
            html.Div(className="card", style={"flex": "1 1 330px"}, children=[
                html.H3("Image"),
                dcc.Upload(id="upload-image", accept=uploads.ACCEPT, max_size=limit, multiple=False,
                           children=html.Div(["Drop an image here or ", html.A("choose a file")]),
                           style={"border": "2px dashed #c5cdd8", "borderRadius": "6px", "padding": "14px",
                                  "textAlign": "center", "cursor": "pointer"}),
                html.P(f"PNG, JPEG or WebP, up to {limit // 2**20} MB; any size (resized and centre-cropped "
                       "like the training images).", className="hint"),
                html.Div(id="upload-error", role="alert", style={"color": "#c0392b", "margin": "6px 0"}),
                _field("…or test image #", dcc.Input(id="xp-test-index", type="number", min=0, step=1, value=0,
                                                     debounce=True, style={"width": "100px"})),
                html.Div(id="xp-source-label", className="hint", style={"margin": "8px 0 4px"}),
                html.Img(id="xp-input-image", width=DETAIL_SIZE, height=DETAIL_SIZE, alt="input image", style=_IMG),
                html.H3(id="prediction-label", style={"margin": "10px 0 0"}),
                sidebyside.open_link("explain"),
                dcc.Graph(id="xp-probs", config=_GRAPH, figure=placeholder(260)),
                neighbours.panel("xp-neighbours"),
            ]),
            html.Div(className="card", style={"flex": "2 1 560px"}, children=[
                html.H3("Why this prediction"),
                html.Div(className="toolbar", children=[
                    _field("Method", dcc.Dropdown(id="xp-method", value="gradcam", clearable=False,
                                                  options=method_options())),
                    _field("Target class", dcc.Dropdown(id="xp-target", value="pred", clearable=False,
                                                        options=target_options(run.class_names))),
                    _field("Grad-CAM layer", dcc.Dropdown(id="xp-cam-layer", clearable=False,
                                                          options=cam_layer_options(run.meta),
                                                          value=run.meta["gradcam_layer"]), "280px",
                           id="xp-cam-layer-field"),
                    _field("Heatmap opacity", dcc.Slider(id="xp-opacity", min=0, max=1, step=0.05, value=0.5,
                                                         marks={0: "0", 0.5: "0.5", 1: "1"}), "200px"),
                ]),
                _method_parameters(),
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
            ]),
        ]),
        sanity_card(),
        html.Div(className="card", children=[
            html.Div(className="toolbar", children=[
                html.H3("Feature maps"),
                _field("Layer", dcc.Dropdown(id="layer-select", clearable=False), "320px"),
                dcc.Checklist(id="xp-fm-all", options=[{"label": " show all channels", "value": "all"}], value=[]),
            ]),
            html.Div(className="row", children=[
                html.Div(dcc.Graph(id="xp-fm-grid", config=_GRAPH), style={"flex": "3 1 480px"}),
                html.Div(dcc.Graph(id="xp-fm-contrib", config=_GRAPH), style={"flex": "2 1 360px"}),
            ]),
            dcc.Graph(id="xp-filters", config=_GRAPH),
        ]),
    ])


def layer_options(meta: dict) -> list[dict]:
    return [{"label": f"{e['name']}  {tuple(e['shape'])}", "value": e["name"]} for e in meta["layers"]]


def cam_layer_options(meta: dict) -> list[dict]:
    """The layers Grad-CAM can use (spatial ones). Given in the layout too: a dropdown without options
    empties its value."""
    return [o for o in layer_options(meta) if o["value"] in explain_spec.spatial_layers(meta)]


def target_options(class_names: list[str]) -> list[dict]:
    return [{"label": "predicted class", "value": "pred"}, {"label": "true class", "value": "true"}] + [
        {"label": f"{i}: {n}", "value": str(i)} for i, n in enumerate(class_names)]


def detail_children(unavailable: dict[str, str] | None = None, failing: dict[str, float] | None = None) -> list:
    """Controls + overlay placed in the errors view's ``detail-explain`` for a gallery image;
    ``unavailable``: method -> why this run's model does not support it; ``failing``: method ->
    similarity, for the methods that fail the run's randomisation check (flagged, as on the tab)."""
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


def register_callbacks(app, store) -> None:
    cache = lambda: explain_cache()  # noqa: E731 - opened lazily, once per worker process
    app.clientside_callback(_UPLOAD_GUARD_JS, Output("xp-upload-guard", "data"), Input("xp-upload-limit", "data"))

    @app.callback(Output("xp-target", "options"), Output("xp-cam-layer", "options"),
                  Output("xp-cam-layer", "value"), Output("layer-select", "options"),
                  Output("layer-select", "value"), Output("xp-test-index", "max"), Input("run-select", "value"),
                  State("xp-cam-layer", "value"))
    @inputs.guarded(*[inputs.keep] * 6)  # options and values hold no sentence: choose_source says what is wrong
    def on_run(run_name, cam_layer):
        run = inputs.run_of(store, run_name)
        cam = cam_layer_options(run.meta)
        # the page's first call leaves the layout's layer (or a link's, see url_state); a layer the new run
        # has too stays, else the run's own
        keep = no_update if ctx.triggered_id is None else \
            cam_layer if cam_layer in [o["value"] for o in cam] else run.meta["gradcam_layer"]
        return (target_options(run.class_names), cam, keep, layer_options(run.meta),
                run.meta["gradcam_layer"], len(run.labels) - 1)

    @app.callback(Output("xp-image", "data"), Output("upload-error", "children"), Output("xp-test-index", "value"),
                  Input("upload-image", "contents"), Input("selected-image", "data"), Input("xp-test-index", "value"),
                  Input("run-select", "value"), State("upload-image", "filename"), State("xp-image", "data"),
                  prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint, inputs.keep)
    def choose_source(contents, selected, index, run_name, filename, current):
        run = inputs.run_of(store, run_name)
        # Several inputs can fire in one round (a run switch also clears selected-image), so
        # look at all of them, not only ctx.triggered_id.
        fired = ctx.triggered_prop_ids
        if "upload-image.contents" in fired:
            source, message = upload_to_source(inputs.text(contents, "the uploaded file"),
                                               inputs.text(filename, "the file name"), run)
            # cleared, so that typing any test index (even the previous one) switches back
            return (source or no_update), message, (None if source else no_update)
        chosen = inputs.selected_image(store, selected) if "selected-image.data" in fired else None
        if chosen is not None and selected["run"] == run.name:
            return {"kind": "test", "run": run.name, "index": chosen[1]}, "", chosen[1]
        if "xp-test-index.value" in fired and index is not None:
            return source_for_run({"index": inputs.index(index, len(run.labels))}, run), "", no_update
        # a malformed stored image is replaced by the run's first test image (render says what was wrong)
        current = inputs.lenient(lambda v: inputs.explained_image(store, v)[1], current, None)
        if "run-select.value" in fired or (current or {}).get("run") != run.name:
            return source_for_run(current, run), no_update, no_update
        raise PreventUpdate

    @app.callback(Output("prediction-label", "children"), Output("xp-probs", "figure"),
                  Output("gradcam-overlay", "src"), Output("xp-input-image", "src"),
                  Output("xp-source-label", "children"), Output("xp-explain-error", "children"),
                  Output("xp-contrast", "children"), Output("xp-overlay-scale", "figure"),
                  Output("xp-overlay-caption", "children"),
                  Input("xp-image", "data"), Input("xp-method", "value"), Input("xp-target", "value"),
                  Input("xp-cam-layer", "value"), Input("xp-opacity", "value"), Input("view-tabs", "value"),
                  *[Input(f"xp-param-{p.name}", "value") for p in PAGE_PARAMS])
    @inputs.guarded(inputs.constant(""), inputs.constant(empty_figure("", height=260)), inputs.constant(""),
                    inputs.constant(""), inputs.constant(""), inputs.hint, inputs.constant([]),
                    inputs.constant(placeholder(DETAIL_SIZE)), inputs.constant(""))
    def render(source, method, target, layer, opacity, tab, *values):
        if tab != TAB:  # every tab's callbacks fire on page load; this one would load torch and a model
            raise PreventUpdate
        panel = build_panel(store, *page_controls(store, source, method, target, layer, opacity, values), cache())
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
        panel = build_panel(store, *page_controls(store, source, method, target, layer, opacity, values), cache(),
                            contrast=False)
        return download(panel, ctx.triggered_id)

    @app.callback(Output("xp-cam-layer", "disabled"), Output("xp-cam-layer-field", "title"),
                  *[o for p in PAGE_PARAMS for o in (Output(f"xp-param-{p.name}", "disabled"),
                                                     Output(f"xp-param-{p.name}-field", "title"))],
                  Output("xp-controls-note", "children"), Input("xp-method", "value"))
    @inputs.guarded(*[inputs.constant(False), inputs.constant("")] * (1 + len(PAGE_PARAMS)), inputs.hint)
    def ignored_controls(method):
        """Disable the controls the chosen method does not read; their tooltips say why."""
        why = ignored_because(inputs.one_of(method, METHODS, "method"))
        return (*[x for name in ["layer", *(p.name for p in PAGE_PARAMS)] for x in (name in why, why.get(name, ""))],
                "")

    @app.callback(Output("xp-method", "options"), Output("xp-method-note", "children"),
                  Output("xp-precompute-note", "children"), Input("run-select", "value"), Input("view-tabs", "value"),
                  Input("xp-precompute-status", "children"))
    @inputs.guarded(inputs.keep, inputs.hint, inputs.constant(""))
    def on_model(run_name, tab, _precomputed):
        """Disable the methods this run's model does not support, saying why; flag an unusable gradcam.npz
        (again once the precompute button has rewritten it)."""
        if tab != TAB:
            raise PreventUpdate
        from .. import explain

        run = inputs.run_of(store, run_name)
        unavailable = explain.unavailable_methods(run)
        note = " ".join(f"{METHODS[m].label} is unavailable: {reason}." for m, reason in unavailable.items())
        options = flag_failing(method_options(unavailable), failing_methods(sanity_data(run)[0]))
        return options, note, precomputed_problem(run) or ""

    @app.callback(Output("xp-fm-grid", "figure"), Output("xp-fm-contrib", "figure"), Output("xp-filters", "figure"),
                  Input("xp-image", "data"), Input("layer-select", "value"), Input("xp-fm-all", "value"),
                  Input("view-tabs", "value"))
    @inputs.guarded(inputs.figure, inputs.figure, inputs.figure)
    def feature_maps(source, layer, show_all, tab):
        if tab != TAB:
            raise PreventUpdate
        run, source = inputs.explained_image(store, source)
        layer = None if layer is None else inputs.one_of(layer, [e["name"] for e in run.meta["layers"]], "layer")
        show_all = "all" in inputs.checklist(show_all, ("all",), "the channels shown")
        view = build_feature_view(store, source, layer, show_all)
        return view.grid, view.contrib, view.filters or empty_figure("no convolution in this model", height=120)

    # torch, Captum and a model take ~2.5 s to load and nothing loads them at start-up; begin
    # once the overview is on screen (its cards just rendered), not while the page still loads.
    @app.callback(Output("xp-warm", "data"), Input("overview-cards", "children"), State("run-select", "value"),
                  prevent_initial_call=True)
    @inputs.guarded(inputs.keep)
    def warm_model(_cards, run_name):
        from .. import explain

        explain.warm(inputs.run_of(store, run_name))
        raise PreventUpdate

    @app.callback(Output("detail-explain", "children"), Input("selected-image", "data"))
    @inputs.guarded(inputs.hint)
    def detail(selected):
        chosen = inputs.selected_image(store, selected)
        if chosen is None:
            return []
        from .. import explain

        return detail_children(explain.unavailable_methods(chosen[0]), failing_methods(sanity_data(chosen[0])[0]))

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
        failing = failing_methods(sanity_data(store.get(source["run"]))[0])
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

    register_job_button(app, store, "gradcam", "xp-precompute", "xp-precompute")
    _register_sanity(app, store)
    faithfulness_card.register_callbacks(app, store)


def page_controls(store, source, method, target, layer, opacity, values) -> tuple[dict, Controls]:
    """The explanations card's inputs, checked: ``(source, Controls)`` for :func:`.build_panel`. The layer and
    the method's parameters are checked against the registry by build_panel (its ``error``)."""
    run, source = inputs.explained_image(store, source)
    return source, Controls(inputs.one_of(method, METHODS, "method"), inputs.target(target, len(run.class_names)),
                            layer, inputs.number(opacity, "the heatmap opacity", 0, 1),
                            {p.name: v for p, v in zip(PAGE_PARAMS, values)})


def detail_controls(store, method, target, selected) -> tuple[dict, Controls]:
    """The gallery detail's inputs, checked: ``(source, Controls)``; PreventUpdate when no image is selected."""
    chosen = inputs.selected_image(store, selected)
    if chosen is None:
        raise PreventUpdate
    return {"kind": "test", "run": selected["run"], "index": chosen[1]}, Controls(
        inputs.one_of(method, METHODS, "method"), inputs.one_of(target, ("pred", "true", "contrast"), "target"))


def job_controls(label: str, button: str, prefix: str) -> html.Div:
    """The toolbar :func:`register_job_button` drives: the button, ``{prefix}-progress``, ``-status``, ``-poll``."""
    return html.Div(className="toolbar", children=[
        html.Button(label, id=button, n_clicks=0),
        html.Progress(id=f"{prefix}-progress", value="0", max="100", style={"width": "200px"}),
        html.Span(id=f"{prefix}-status", className="hint"),
        dcc.Interval(id=f"{prefix}-poll", interval=2000, disabled=True),
    ])


def job_view(status) -> tuple[bool, str, str, str, bool]:
    """A :class:`..jobs.JobStatus` (or None) -> (poll disabled, status text, progress value, progress max,
    button disabled): the page polls and the button waits only while the job is queued or running."""
    if status is None:
        return True, "", "0", "100", False
    active = status.state in ("queued", "running")
    text = {"queued": "starting…", "running": f"{status.done:,} / {status.total:,} maps",
            "done": status.message, "failed": f"failed: {status.message}", "busy": status.message}[status.state]
    return not active, text, str(status.done), str(max(status.total, 1)), active


def register_job_button(app, store, kind: str, button: str, prefix: str) -> None:
    """A button starting job ``kind`` (:mod:`..jobs`: one per run for the whole server, at most
    ``XAI_MAX_JOBS`` at once) for the selected run, with ``{prefix}-status``/``-progress`` polled
    through ``{prefix}-poll`` while it runs."""
    from .. import jobs

    @app.callback(Output(f"{prefix}-poll", "disabled"), Output(f"{prefix}-status", "children"),
                  Output(f"{prefix}-progress", "value"), Output(f"{prefix}-progress", "max"),
                  Output(button, "disabled"),
                  Input(button, "n_clicks"), Input(f"{prefix}-poll", "n_intervals"),
                  Input("run-select", "value"), prevent_initial_call=True)
    @inputs.guarded(inputs.constant(True), inputs.hint, inputs.constant("0"), inputs.constant("100"),
                    inputs.constant(True))
    def job(_clicks, _ticks, run_name):
        run = inputs.run_of(store, run_name)
        if ctx.triggered_id == button:
            return job_view(jobs.start(kind, run.run.path, store.data_dir))
        return job_view(jobs.read_status(kind, run.run.path))


# ------------------------------------------------------------------ sanity check: cascade plot and badge

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
        dcc.Graph(id="xp-sanity-plot", config=_GRAPH, figure=placeholder(340)),
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


def _register_sanity(app, store) -> None:
    @app.callback(Output("xp-sanity-plot", "figure"), Output("xp-sanity-note", "children"),
                  Input("run-select", "value"), Input("xp-sanity-metric", "value"), Input("view-tabs", "value"))
    @inputs.guarded(inputs.figure, inputs.hint)
    def cascade(run_name, metric, tab):
        if tab != TAB:
            raise PreventUpdate
        run = inputs.run_of(store, run_name)
        metric = inputs.one_of(metric, ("spearman", "ssim"), "similarity")
        data, problem = sanity_data(run)
        if data is None:
            return empty_figure("no sanity check for this run", height=340), problem
        return cascade_figure(data, metric), problem

    @app.callback(Output("xp-sanity-badge", "children"), Input("xp-method", "value"), Input("run-select", "value"),
                  Input("view-tabs", "value"))
    @inputs.guarded(inputs.hint)
    def badge(method, run_name, tab):
        if tab != TAB:
            raise PreventUpdate
        method = inputs.one_of(method, METHODS, "method")
        return sanity_badge(method, failing_methods(sanity_data(inputs.run_of(store, run_name))[0]))
